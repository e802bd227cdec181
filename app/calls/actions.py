"""A live call's actions, taken by its agent or through `send_data_message`: hang up, transfer, DTMF, text."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from app.calls.call_log import CallRecorder
from app.calls.call_media import CallMedia
from app.calls.ending import CallEnding
from app.calls.transport import CallTransport
from app.media.dtmf import DEFAULT_TIMING, DtmfTiming, valid_dtmf_digits
from app.pipeline.base import Pipeline
from app.schemas.calls import EventSeverity
from app.schemas.data_messages import SIP_VERBS, valid_transfer_headers, valid_transfer_target

#: After a transfer the provider ends the stream; callbridge ends the call itself after this long.
TRANSFER_GRACE_S = 5.0

Spawn = Callable[[Coroutine[Any, Any, object], str], None]


class LegControl(Protocol):
    """The provider leg's REST side, as a call uses it (`calls.legs.ProviderLegs`)."""

    async def transfer(
        self,
        call_id: str,
        target: str,
        *,
        sip_verb: str = "REFER",
        extra_headers: dict[str, str] | None = None,
        fallback_to_bridge: bool = False,
    ) -> str | None:
        """None when the transfer happened (the caller is leaving the agent), else why not.

        The keywords apply to SIP calls (`ColdTransferMessage`); other legs refuse what they cannot do."""
        ...

    async def send_dtmf(self, call_id: str, digits: str, tone_ms: int) -> tuple[bool, str | None]:
        """(sent out-of-band, error of a failed attempt)."""
        ...


class NoLegControl:
    """A call without provider REST control: transfers fail, DTMF is played in-band."""

    async def transfer(
        self,
        call_id: str,
        target: str,
        *,
        sip_verb: str = "REFER",
        extra_headers: dict[str, str] | None = None,
        fallback_to_bridge: bool = False,
    ) -> str | None:
        return "this call's medium has no transfer"

    async def send_dtmf(self, call_id: str, digits: str, tone_ms: int) -> tuple[bool, str | None]:
        return False, None


class CallActions:
    """What can be done to a joined call. Each action records what it did as call events."""

    def __init__(
        self,
        call_id: str,
        ending: CallEnding,
        record: CallRecorder,
        transport: CallTransport,
        media: CallMedia,
        pipeline: Pipeline,
        legs: LegControl,
        spawn: Spawn,
    ) -> None:
        self._call_id = call_id
        self._ending = ending
        self._record = record
        self._transport = transport
        self._media = media
        self._pipeline = pipeline
        self._legs = legs
        self._spawn = spawn

    async def transfer(
        self,
        target: str,
        *,
        sip_verb: str = "REFER",
        extra_headers: dict[str, str] | None = None,
        fallback_to_bridge: bool = False,
    ) -> str | None:
        """Hand the caller to `target`; the agent leaves. None on success, else why it failed (the call
        then stays with the agent). The keywords are `ColdTransferMessage`'s SIP options."""
        try:
            target = valid_transfer_target(target)
            if sip_verb not in SIP_VERBS:
                raise ValueError(f"sipVerb {sip_verb!r} must be one of {', '.join(SIP_VERBS)}")
            extra_headers = valid_transfer_headers(extra_headers or {})
        except ValueError as exc:
            self._record("transfer", f"transfer refused: {exc}", EventSeverity.WARNING, {"outcome": "failed"})
            return str(exc)
        text = f"the caller was transferred to {target}"
        if not self._ending.transfer_started(text):
            return "a transfer is already under way"
        self._record("transfer", f"transferring the caller to {target}", extras={"target": target})
        problem = await self._legs.transfer(
            self._call_id,
            target,
            sip_verb=sip_verb,
            extra_headers=extra_headers,
            fallback_to_bridge=fallback_to_bridge,
        )
        if problem is not None:
            self._ending.transfer_failed()
            self._record(
                "transfer",
                f"transfer to {target} failed: {problem}",
                EventSeverity.WARNING,
                {"target": target, "outcome": "failed"},
            )
            return problem
        # No await from here on: a SIP leg stops the caller's stream as its transfer succeeds, and the
        # session must see the transfer done (and recorded) before it reads that stop.
        self._ending.transfer_done()
        self._record("transfer", text, extras={"target": target, "outcome": "transferred"})
        # The provider ends the stream itself once the transfer runs; closing it first could end the call
        # before the provider fetched the transfer's instructions (Plivo). A stream left open is closed later.
        self._spawn(self._leave_after(TRANSFER_GRACE_S), "transfer-grace")
        return None

    async def _leave_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._ending.leave_after_transfer()

    async def play_dtmf(self, digits: str, timing: DtmfTiming = DEFAULT_TIMING) -> str:
        """Send DTMF: as the transport's own events, else through the provider's API, else as tones.

        Returns how it was sent: `out-of-band`, `in-band`, `refused` (not DTMF digits) or `dropped` (the
        playout queue is full).
        """
        try:
            digits = valid_dtmf_digits(digits)
        except ValueError as exc:
            self._record("play_dtmf", f"DTMF refused: {exc}", EventSeverity.WARNING)
            return "refused"
        sent = await self._transport.send_dtmf(digits, timing.tone_ms)
        if not sent:
            sent, problem = await self._legs.send_dtmf(self._call_id, digits, timing.tone_ms)
            if problem is not None:
                self._record(
                    "provider_error",
                    f"DTMF through the provider failed, playing tones: {problem}",
                    EventSeverity.WARNING,
                )
        method = "out-of-band" if sent else "in-band"
        if not sent and self._media.play_tones(digits, timing):
            self._record(
                "play_dtmf",
                f"DTMF {digits} not sent: the agent's audio already fills the playout queue",
                EventSeverity.WARNING,
                {"digits": digits, "method": "dropped"},
            )
            return "dropped"
        self._record("play_dtmf", f"sent DTMF {digits} {method}", extras={"digits": digits, "method": method})
        return method

    async def send_user_text(self, text: str) -> bool:
        """Text injected as if the caller said it (`user_text_message`)."""
        self._record("user_text_message", text, EventSeverity.DEBUG)
        return await self._pipeline.send_user_text(text)

    async def speak(self, text: str) -> bool:
        """Make the agent say `text` now (`forced_agent_message`)."""
        self._record("forced_agent_message", text, EventSeverity.DEBUG)
        return await self._pipeline.speak(text=text)
