"""The REST side of a provider: place a call, hang it up, transfer it, send DTMF; and its status reports.

A `CallControl` is one provider account's client (built from its imported telephony config). It knows
the provider's requests and answers and nothing about calls, sessions or streams: `calls/` decides when
to use it, and the status callbacks it asks for are parsed by the provider's webhook side into
`StatusUpdate`s.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar


class LegStatus(StrEnum):
    """A dialled leg's progress, in every provider's terms."""

    INITIATED = "initiated"
    RINGING = "ringing"
    ANSWERED = "answered"
    COMPLETED = "completed"  # answered, then ended
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {LegStatus.COMPLETED, LegStatus.BUSY, LegStatus.NO_ANSWER, LegStatus.FAILED, LegStatus.CANCELED}
)


class LegState(StrEnum):
    """A dialled leg's state as recorded with its call: the provider's last status, or callbridge's own
    while a transfer hands the leg to someone else."""

    INITIATED = "initiated"
    RINGING = "ringing"
    ANSWERED = "answered"
    COMPLETED = "completed"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    FAILED = "failed"
    CANCELED = "canceled"
    TRANSFERRING = "transferring"
    TRANSFERRED = "transferred"

    @classmethod
    def reported(cls, status: LegStatus) -> LegState:
        """The state a status report leaves the leg in."""
        return cls(status.value)

    @property
    def final(self) -> bool:
        """The provider reported the leg over."""
        return self.value in FINAL_STATUSES

    @property
    def handed_over(self) -> bool:
        """A transfer is giving (or gave) the leg to someone else: callbridge must not hang it up."""
        return self in (LegState.TRANSFERRING, LegState.TRANSFERRED)


#: `CallStatus` of Twilio's status callbacks, which Telnyx's TeXML callbacks copy.
TWILIO_CALL_STATUSES: Mapping[str, LegStatus] = {
    "queued": LegStatus.INITIATED,
    "initiated": LegStatus.INITIATED,
    "ringing": LegStatus.RINGING,
    "in-progress": LegStatus.ANSWERED,
    "answered": LegStatus.ANSWERED,
    "completed": LegStatus.COMPLETED,
    "busy": LegStatus.BUSY,
    "no-answer": LegStatus.NO_ANSWER,
    "failed": LegStatus.FAILED,
    "canceled": LegStatus.CANCELED,
}


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """One status report from the provider about a leg it dialled."""

    status: LegStatus
    provider_status: str  # the provider's own word
    provider_call_id: str | None = None
    duration_s: float | None = None
    detail: str | None = None  # hang-up cause or error text, when the provider gives one


@dataclass(frozen=True, slots=True)
class DialRequest:
    """What callbridge asks a provider to dial, with the URLs the provider calls back on."""

    call_id: str
    to: str
    from_: str
    stream_xml: str  # the XML that connects the answered call to its joinUrl (for providers taking it inline)
    answer_url: str  # serves that XML, signed by the provider (for providers that fetch it)
    status_url: str  # status callbacks
    ring_timeout_s: int
    time_limit_s: int
    additional_params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Dialled:
    """The provider accepted the dial: its id for the call (or for the request, until the call has one)."""

    provider_call_id: str | None
    provider_request_id: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderLeg:
    """The provider's handle on one call, as far as callbridge knows it."""

    provider_call_id: str | None
    provider_request_id: str | None = None
    answered: bool = True


@dataclass(frozen=True, slots=True)
class DialLookup:
    """What a provider's call list shows of dials to `to` from `from_` created since `since` (a dial whose
    outcome a crash left unknown): their call ids, newest first, and the request ids of dials that have no
    call id yet (Plivo's queued calls). Both empty: provably none."""

    provider_call_ids: tuple[str, ...]
    request_ids: tuple[str, ...] = ()

    @property
    def found(self) -> bool:
        return bool(self.provider_call_ids or self.request_ids)


class CallControl(ABC):
    """One provider account's call-control REST client. Every method raises ProviderApiError on failure."""

    provider: ClassVar[str]
    #: The provider sends DTMF itself (signalled, RFC 4733); otherwise callbridge plays tones in-band.
    out_of_band_dtmf: ClassVar[bool] = False
    #: Dial-request fields callbridge sets itself, in the provider's spelling: `additionalParams` may not.
    reserved_params: ClassVar[frozenset[str]] = frozenset()

    @staticmethod
    def param_name(key: str) -> str:
        """A dial-request field name in the provider's spelling (`statusCallback` → `StatusCallback`)."""
        return key

    @classmethod
    def additional_params(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        """`additionalParams` in the provider's spelling; ValueError names a field callbridge must set."""
        params = {cls.param_name(k): v for k, v in given.items()}
        taken = sorted(k for k in params if k in cls.reserved_params)
        if taken:
            raise ValueError(
                f"additionalParams may not set {', '.join(taken)}: callbridge sets "
                f"{'it' if len(taken) == 1 else 'them'} to connect and follow the call"
            )
        return params

    @abstractmethod
    async def dial(self, request: DialRequest) -> Dialled:
        """Place the call. Never sent twice for one request (a timed-out dial is not retried)."""

    @abstractmethod
    async def hang_up(self, leg: ProviderLeg) -> None:
        """End the leg (cancel it while it rings). A leg that has already ended counts as success."""

    @abstractmethod
    async def transfer(self, leg: ProviderLeg, target: str, transfer_url: str) -> None:
        """Connect the caller to `target` (E.164 or `sip:`) instead of the agent.

        `transfer_url` serves the provider's `<Dial>` XML for providers that fetch it.
        """

    async def send_dtmf(self, leg: ProviderLeg, digits: str, tone_ms: int = 250) -> None:
        """Play `digits` (0-9 * # A-D, `w`/`W` pauses) into the call out-of-band (if `out_of_band_dtmf`)."""
        raise NotImplementedError(f"{self.provider} has no DTMF API")

    async def find_dialled(self, to: str, from_: str, since: datetime) -> DialLookup:
        """Ask the provider's call list for calls to `to` from `from_` created at or after `since`.

        The providers take no idempotency key on call creation: this is how a dial whose outcome is unknown
        is settled before anything is dialled again. ProviderApiError when the provider cannot answer;
        NotImplementedError when it has no such list (the outcome stays unknown).
        """
        raise NotImplementedError(f"{self.provider} has no call list callbridge can reconcile a dial with")


def pascal_case(key: str) -> str:
    """`status_callback` / `statusCallback` → `StatusCallback` (Twilio's and TeXML's form fields)."""
    if "_" in key:
        return "".join(part[:1].upper() + part[1:] for part in key.split("_"))
    return key[:1].upper() + key[1:]


def snake_case(key: str) -> str:
    """`hangupUrl` → `hangup_url` (Plivo's fields)."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key).lstrip("_")
