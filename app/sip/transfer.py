"""Cold transfers of one SIP call: the call's `LegControl` (`app.calls.actions`).

`sipVerb: REFER` (the default) asks the far end to call the target (`app.sip.refer`); once it reports the
target answered, callbridge sends BYE (RFC 5589 §6) and the agent leaves. `sipVerb: INVITE` dials the target
as a second leg (`SipDialer.connect`, offering the caller's codec first) while the caller stays with the
agent; once it answers the agent leaves and the two legs are bridged (`app.sip.bridge`) until either hangs
up. `fallbackToBridge: true` bridges when the REFER itself is refused (405, 501, 603...): a target that
refused the call (a failed sipfrag) is not dialled again. Every step is a `sip_transfer` call event.

SIP billing (`sipDetails.billedDuration`): a second leg bills from its INVITE to its end, answered or not,
on top of the caller's leg, which a bridge keeps up after the call (the agent's part) ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import TYPE_CHECKING, Any

from app.calls.service import billed_seconds
from app.schemas.calls import EventSeverity
from app.sip.bridge import BridgeLeg, SipBridge
from app.sip.call_transport import SipCallTransport
from app.sip.leg import SipLeg
from app.sip.media_setup import RunningMedia, SipMediaSetup
from app.sip.message import SipParseError, SipRequest, SipResponse, SipUri
from app.sip.outgoing import Connected, SipDialer, SipDialPlan, Unanswered
from app.sip.refer import REFER_TIMEOUT_S, ReferOutcome, ReferProgress, SipFrag, refer_headers, refer_target
from app.sip.rtp_session import RtpSession
from app.sip.transaction import Clock, LoopClock
from app.store.repositories import CallRepository
from app.store.tables import CallRow, utcnow

if TYPE_CHECKING:
    from app.events.log import CallEventLog


class SipTransferControl:
    """One SIP call's transfers (LegControl). A bridge it set up runs in `run_bridge` after the session."""

    def __init__(
        self,
        row: CallRow,
        leg: SipLeg,
        transport: SipCallTransport,
        rtp: RtpSession,
        media: RunningMedia,
        setup: SipMediaSetup,
        dialer: SipDialer,
        events: CallEventLog,
        calls_repo: CallRepository,
        clock: Clock | None = None,
        refer_timeout_s: float = REFER_TIMEOUT_S,
    ) -> None:
        self._row = row
        self._leg = leg
        self._transport = transport
        self._rtp = rtp
        self._media = media
        self._setup = setup
        self._dialer = dialer
        self._events = events
        self._repo = calls_repo
        self._clock = clock or LoopClock()
        self._refer_timeout_s = refer_timeout_s
        self._bridge: SipBridge | None = None
        #: When the bridged second leg's INVITE was sent.
        self._invited = utcnow()
        #: Set when the caller leaves the agent's call: its BYE, or the session's end (`session_ended`).
        self._caller_gone = asyncio.Event()
        leg_hung_up = asyncio.ensure_future(leg.hung_up.wait())
        leg_hung_up.add_done_callback(lambda _: self._caller_gone.set())
        self._watching = leg_hung_up
        #: Set once a bridge this call's transfer set up has ended (and been billed).
        self.bridge_over = asyncio.Event()
        #: Second legs still ringing when the transfer was abandoned (kept until they end).
        self._abandoned: set[asyncio.Future[Connected | Unanswered]] = set()

    # --- LegControl ---------------------------------------------------------------------------

    async def transfer(
        self,
        call_id: str,
        target: str,
        *,
        sip_verb: str = "REFER",
        extra_headers: dict[str, str] | None = None,
        fallback_to_bridge: bool = False,
    ) -> str | None:
        """REFER or bridge to `target` (module doc); None once the caller has left the agent."""
        if self._leg.over:
            return "the SIP call is over"
        try:
            uri = refer_target(target, self._leg.dialog.remote_target)
        except SipParseError as exc:
            return f"transfer target {target!r}: {exc}"
        headers = extra_headers or {}
        if sip_verb == "INVITE":
            return await self._bridged(uri, headers)
        outcome = await self._referred(uri, headers)
        if outcome.transferred:
            self._leg.hang_up()
            # The stream stops at once; the session reads the stop only after this action recorded the
            # transfer (CallActions takes no await after a successful transfer).
            self._transport.far_end_hung_up(f"the caller was transferred to {uri}")
            return None
        if outcome.refused and fallback_to_bridge:
            self._record(f"{outcome.text}; bridging to {uri} instead", extras={"fallback": "bridge"})
            return await self._bridged(uri, headers)
        return outcome.text

    async def send_dtmf(self, call_id: str, digits: str, tone_ms: int) -> tuple[bool, str | None]:
        """SIP calls send digits on their RTP stream (the transport); nothing else to try."""
        return False, None

    # --- REFER --------------------------------------------------------------------------------

    async def _referred(self, uri: SipUri, headers: dict[str, str]) -> ReferOutcome:
        leg = self._leg
        referred_by = leg.dialog.local.uri
        request = leg.dialog.request("REFER", headers=refer_headers(uri, referred_by, headers))
        progress = ReferProgress(request.cseq[0], self._clock, self._refer_timeout_s, self._progressed)
        leg.refer = progress
        self._record(f"sent REFER to {uri}", EventSeverity.DEBUG, {"method": "REFER", "target": str(uri)})
        answering = asyncio.ensure_future(self._answered(request, progress))
        deciding = asyncio.ensure_future(progress.wait())
        gone = asyncio.ensure_future(self._caller_gone.wait())
        try:
            await asyncio.wait((deciding, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in (answering, deciding, gone):
                waiting.cancel()
            progress.cancel()
        if progress.outcome is None:
            return ReferOutcome(False, 0, "the call ended during the transfer")
        outcome = progress.outcome
        extras: dict[str, Any] = {"method": "REFER", "status": outcome.status}
        self._record(
            outcome.text, EventSeverity.INFO if outcome.transferred else EventSeverity.WARNING, extras
        )
        return outcome

    async def _answered(self, request: SipRequest, progress: ReferProgress) -> None:
        progress.answered(await self._leg.send(request))

    def _progressed(self, frag: SipFrag) -> None:
        self._record(
            f"the transfer target: {frag.status} {frag.reason}",
            EventSeverity.DEBUG,
            {"method": "REFER", "status": frag.status},
        )

    # --- bridge -------------------------------------------------------------------------------

    async def _bridged(self, uri: SipUri, headers: dict[str, str]) -> str | None:
        """Dial `uri`; answered, the caller is handed to a bridge with it (None), else why not."""
        if uri.transport not in self._dialer.transports_listening:
            return f"{uri}: {uri.transport} is not among CALLBRIDGE_SIP_LISTEN's transports"
        plan = SipDialPlan(uri, self._leg.dialog.local.uri, None, None, headers)
        caller_codec = self._media.negotiated.codec.name
        codecs = [caller_codec, *(name for name in self._setup.codecs if name != caller_codec)]
        self._record(
            f"calling {uri} to bridge the caller to it", extras={"method": "INVITE", "target": str(uri)}
        )
        invited = utcnow()
        placed = await self._dial(plan, codecs)
        if isinstance(placed, Unanswered):
            await self._bill_second_leg(invited, None)
            if placed.cancelled:
                return "the call ended while the transfer target rang"
            status = f"{placed.status} {placed.reason}" if placed.status else placed.reason
            text = f"the transfer target did not answer: {status}"
            self._record(text, EventSeverity.WARNING, {"method": "INVITE", "status": placed.status})
            return text
        if self._leg.over:  # the call ended as the target answered
            _hang_up(placed)
            await self._bill_second_leg(invited, None)
            return "the call ended as the transfer target answered"
        # The target's re-INVITEs (a PBX re-anchoring media, a hold) repoint its stream, like the caller's.
        placed.leg.on_offer = RunningMedia(self._setup, placed.rtp, placed.negotiated).answer
        self._bridge = SipBridge(
            BridgeLeg(self._leg, self._rtp, self._media.negotiated),
            BridgeLeg(placed.leg, placed.rtp, placed.negotiated),
            self._setup.rtp_timeout_s,
        )
        self._invited = invited
        mode = "relayed as is" if caller_codec == placed.negotiated.codec.name else "transcoded"
        self._record(
            f"bridged the caller to {uri} ({caller_codec} ↔ {placed.negotiated.codec.name}, {mode})",
            extras={
                "method": "INVITE",
                "callerCodec": caller_codec,
                "targetCodec": placed.negotiated.codec.name,
            },
        )
        self._transport.hand_over(self._bridge, f"the caller was bridged to {uri}")
        return None

    async def _dial(self, plan: SipDialPlan, codecs: list[str]) -> Connected | Unanswered:
        """The second leg, CANCELled once the caller is gone. A transfer abandoned meanwhile (the session's
        end cancels its action) still CANCELs the INVITE, and hangs up a target that answered anyway."""
        cancel = asyncio.Event()
        gone = asyncio.ensure_future(self._caller_gone.wait())
        gone.add_done_callback(lambda _: cancel.set())
        dial = asyncio.ensure_future(self._dialer.connect(plan, codecs, cancel, self._target_ringing))
        try:
            return await asyncio.shield(dial)
        except asyncio.CancelledError:
            cancel.set()
            self._abandoned.add(dial)
            dial.add_done_callback(self._abandoned_dial_ended)
            raise
        finally:
            gone.cancel()

    def _abandoned_dial_ended(self, dial: asyncio.Future[Connected | Unanswered]) -> None:
        self._abandoned.discard(dial)
        if dial.cancelled() or dial.exception() is not None:
            return
        placed = dial.result()
        if isinstance(placed, Connected):
            _hang_up(placed)

    def session_ended(self) -> None:
        """The agent's session is over: a transfer still under way is abandoned (its INVITE CANCELled)."""
        self._caller_gone.set()
        self._watching.cancel()

    def _target_ringing(self, response: SipResponse) -> None:
        self._record(
            f"the transfer target is ringing ({response.status} {response.reason})",
            EventSeverity.DEBUG,
            {"method": "INVITE", "status": response.status},
        )

    @property
    def bridged(self) -> bool:
        """Whether a transfer bridged the caller (`run_bridge` then relays until the bridge ends)."""
        return self._bridge is not None

    def end_bridge(self, reason: str) -> None:
        """End the bridge, if any: both legs get BYE (shutdown)."""
        if self._bridge is not None:
            self._bridge.end(reason)

    async def run_bridge(self) -> None:
        """After the session: relay the bridge set up by a transfer, if any, until it ends (billed)."""
        bridge = self._bridge
        if bridge is None:
            return
        try:
            reason = await bridge.run()
        finally:
            ended = utcnow()
            with contextlib.suppress(Exception):  # billing must not turn the bridge's end into an error
                await self._repo.update_leg(self._row.id, sip_ended=ended)
                await self._bill_second_leg(self._invited, ended)
            self.bridge_over.set()
        self._record(
            f"the bridge ended: {reason}",
            extras={
                "method": "INVITE",
                "packetsToTarget": bridge.to_target,
                "packetsToCaller": bridge.to_caller,
            },
        )

    async def _bill_second_leg(self, invited: datetime, ended: datetime | None) -> None:
        seconds = billed_seconds(invited, ended or utcnow())
        await self._repo.add_sip_transfer_billing(self._row.id, seconds)

    def _record(
        self, text: str, severity: EventSeverity = EventSeverity.INFO, extras: dict[str, Any] | None = None
    ) -> None:
        self._events.record(self._row.id, self._row.created, "sip_transfer", text, severity, extras)


def _hang_up(placed: Connected) -> None:
    placed.leg.hang_up()
    placed.rtp.close()
