"""Cold transfer by REFER (RFC 3515): the request, and the implicit subscription that reports how it went.

callbridge asks the far end to call the target itself (`Refer-To`, with `Referred-By` per RFC 3892). The far
end answers the REFER (202 Accepted, or a refusal such as 405/501/603), then reports the new call's progress
in NOTIFYs whose `message/sipfrag` body is that call's status line: `SIP/2.0 100 Trying`, `SIP/2.0 180
Ringing`, and finally `SIP/2.0 200 OK` (transferred) or a failure (`SIP/2.0 486 Busy Here`). Each NOTIFY is
answered 200. No final status within `REFER_TIMEOUT_S` of the REFER, or a subscription terminated before one,
is a failed transfer: the caller stays with the agent.

A transfer target that is a phone number (`+14155550100`) becomes `sip:+14155550100@HOST;user=phone` with the
host (and port and transport) of the far end's Contact: the PBX or carrier that sent or took the call is the
one that can route a number.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass

from app.sip.message import NameAddr, SipRequest, SipResponse, SipUri, parse_uri
from app.sip.transaction import Clock, TimerHandle

#: How long after the REFER its final NOTIFY may take (the target rings meanwhile).
REFER_TIMEOUT_S = 60.0
_SIPFRAG_STATUS = re.compile(r"^SIP/2\.0[ \t]+([1-6][0-9]{2})(?:[ \t]+(.*))?$")


@dataclass(frozen=True, slots=True)
class SipFrag:
    """The status line of the new call, as a NOTIFY reports it."""

    status: int
    reason: str


def parse_sipfrag(body: bytes) -> SipFrag:
    """The status line a `message/sipfrag` body starts with (RFC 3420); ValueError when it has none."""
    first = body.decode("utf-8", "replace").lstrip("\r\n").partition("\n")[0].rstrip("\r")
    found = _SIPFRAG_STATUS.match(first)
    if found is None:
        raise ValueError(f"not a SIP status line: {first[:80]!r}")
    return SipFrag(int(found.group(1)), (found.group(2) or "").strip())


def refer_target(target: str, far_end: SipUri) -> SipUri:
    """The URI to transfer to: a sip:/sips: URI as given; a number at the far end's host (module doc)."""
    if target.startswith(("sip:", "sips:")):
        return parse_uri(target)
    params: dict[str, str | None] = {"user": "phone"}
    transport = far_end.params.get("transport")
    if transport:
        params["transport"] = transport.lower()
    return SipUri(far_end.scheme, target, far_end.host, far_end.port, params)


def refer_headers(target: SipUri, referred_by: SipUri, extra: dict[str, str]) -> dict[str, str]:
    """The headers of the REFER: `Refer-To`, `Referred-By` (no tag, RFC 3892), then the user's own."""
    return {"Refer-To": str(NameAddr(target)), "Referred-By": str(NameAddr(referred_by)), **extra}


@dataclass(frozen=True, slots=True)
class ReferOutcome:
    """How a REFER ended: `transferred`, else the status (0 when none came) and why."""

    transferred: bool
    status: int
    text: str
    #: The REFER itself was refused (the far end cannot transfer: a bridge may still work).
    refused: bool = False


class ReferProgress:
    """The implicit subscription of one REFER: its answer, its NOTIFYs, its deadline, and the outcome."""

    def __init__(
        self,
        cseq: int,
        clock: Clock,
        timeout_s: float = REFER_TIMEOUT_S,
        on_progress: Callable[[SipFrag], None] | None = None,
    ) -> None:
        self._cseq = cseq
        self._on_progress = on_progress
        self.outcome: ReferOutcome | None = None
        self._decided = asyncio.Event()
        self._timeout_s = timeout_s
        self._timer: TimerHandle | None = clock.call_later(timeout_s, self._timed_out)

    async def wait(self) -> ReferOutcome:
        await self._decided.wait()
        assert self.outcome is not None
        return self.outcome

    def answered(self, response: SipResponse) -> None:
        """The REFER's final response: a refusal decides; a 2xx leaves it to the NOTIFYs."""
        if response.status >= 300:
            text = f"the REFER was refused: {response.status} {response.reason}"
            self._decide(ReferOutcome(False, response.status, text, refused=True))

    def notified(self, request: SipRequest) -> int:
        """Take one NOTIFY; the status to answer it with (200, or 481/489/400/415 per RFC 3515/6665)."""
        event = (request.headers.get("Event") or "").split(";")
        if event[0].strip().lower() != "refer":
            return 489  # Bad Event: we only ever subscribed to `refer`
        ids = [p.strip()[3:] for p in event[1:] if p.strip().lower().startswith("id=")]
        if ids and ids[0] != str(self._cseq):
            return 481  # another REFER's subscription (an older one, or none of ours)
        state = (request.headers.get("Subscription-State") or "").split(";")[0].strip().lower()
        if request.body:
            if request.content_type != "message/sipfrag":
                return 415
            try:
                frag = parse_sipfrag(request.body)
            except ValueError:
                return 400
            self._reported(frag)
        if state == "terminated" and self.outcome is None:
            self._decide(
                ReferOutcome(False, 0, "the far end ended the transfer's subscription without a result")
            )
        return 200

    def _reported(self, frag: SipFrag) -> None:
        if self.outcome is not None:
            return
        if frag.status < 200:
            if self._on_progress is not None:
                self._on_progress(frag)
        elif frag.status < 300:
            self._decide(ReferOutcome(True, frag.status, f"the target answered: {frag.status} {frag.reason}"))
        else:
            text = f"the target did not take the call: {frag.status} {frag.reason}"
            self._decide(ReferOutcome(False, frag.status, text))

    def _timed_out(self) -> None:
        self._timer = None
        self._decide(ReferOutcome(False, 0, f"no final NOTIFY within {self._timeout_s:g} s of the REFER"))

    def cancel(self) -> None:
        """The call ended first: stop the deadline (the outcome stays undecided)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _decide(self, outcome: ReferOutcome) -> None:
        if self.outcome is not None:
            return
        self.outcome = outcome
        self.cancel()
        self._decided.set()
