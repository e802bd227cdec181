"""A SIP call whose dialog is up (ACK received or sent) runs as a CallSession, like every other call."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from app.calls.session import CallSession
from app.schemas.calls import EndReason, EventSeverity
from app.sip.call_transport import SipCallTransport
from app.sip.leg import SipLeg
from app.sip.media_setup import RunningMedia, SipMediaSetup, is_held
from app.sip.rtp_session import RtpSession
from app.sip.sdp import Negotiated
from app.sip.transfer import SipTransferControl
from app.sip.user_agent import STOP_GRACE_S
from app.store.secret_box import SecretDecryptionError
from app.store.tables import CallRow

if TYPE_CHECKING:
    from app.services import Services
    from app.sip.outgoing import SipDialer

log = logging.getLogger(__name__)


class SipCallRunner:
    """Binds an established SIP leg and its RTP stream to the call's agent, and runs the call to its end."""

    def __init__(self, services: Services, media: SipMediaSetup) -> None:
        self._services = services
        self._media = media
        #: Dials transfers' second legs (set by SipService: the dialer runs its calls through this runner).
        self.dialer: SipDialer | None = None
        #: Calls whose agent left for a bridge that is still up.
        self._bridged: set[SipTransferControl] = set()

    async def stop(self) -> None:
        """Shutdown: end the bridges still up (both legs get BYE), giving them `STOP_GRACE_S` to finish."""
        bridged = list(self._bridged)
        for transfers in bridged:
            transfers.end_bridge("the server shut down")
        if bridged:
            waits = [asyncio.ensure_future(transfers.bridge_over.wait()) for transfers in bridged]
            _, pending = await asyncio.wait(waits, timeout=STOP_GRACE_S)
            for wait in pending:
                wait.cancel()

    async def run(self, row: CallRow, leg: SipLeg, rtp: RtpSession, negotiated: Negotiated) -> None:
        """Run the call's session to its end, then the bridge a transfer made of it, if any; the call's
        billing is final (`call.billed`) only once both are over."""
        self._services.calls.defer_billing(row.id)
        try:
            await self._run(row, leg, rtp, negotiated)
        finally:
            leg.let_go()
            await self._services.calls.billing_final(row)

    async def _run(self, row: CallRow, leg: SipLeg, rtp: RtpSession, negotiated: Negotiated) -> None:
        services = self._services
        transport = SipCallTransport(leg, rtp, negotiated, self._media.rtp_timeout_s)
        leg.listen(transport)

        def held(on_hold: bool) -> None:
            transport.hold(on_hold)
            kind, text = (
                ("sip_hold", "the far end put the call on hold: no RTP is sent, the RTP timeout waits")
                if on_hold
                else ("sip_resume", "the far end took the call off hold: RTP flows both ways again")
            )
            services.calls.events.record(row.id, row.created, kind, text)

        running = RunningMedia(self._media, rtp, negotiated, held)
        leg.on_offer, leg.on_answer = running.answer, running.accept
        if is_held(negotiated):  # a call that starts on hold (the INVITE offered sendonly)
            transport.hold(True)
        try:
            pipeline = services.build_pipeline(row)
        except SecretDecryptionError:
            text = "the agent's secrets cannot be decrypted with this server's CALLBRIDGE_SECRET_KEY"
            services.calls.events.record(row.id, row.created, "pipeline_error", text, EventSeverity.ERROR)
            await transport.close()
            await services.calls.end(row, EndReason.SYSTEM_ERROR, text)
            return
        transfers = (
            SipTransferControl(
                row,
                leg,
                transport,
                rtp,
                running,
                self._media,
                self.dialer,
                services.events,
                services.calls_repo,
            )
            if self.dialer is not None
            else None
        )
        session = CallSession(row, transport, pipeline, services.calls, services.session_settings, transfers)

        def expired(text: str) -> None:
            session.record("sip_session_expired", text, EventSeverity.WARNING)
            session.finish(EndReason.CONNECTION_ERROR, text)

        leg.on_session_expired = expired
        if not services.sessions.claim(row.id, session):  # cannot happen: the call was just made here
            await transport.close()
            return
        try:
            await session.run()
        finally:
            services.sessions.release(row.id, session)
            if transfers is not None:
                transfers.session_ended()
        if transfers is not None and transfers.bridged:
            self._bridged.add(transfers)
            try:
                await transfers.run_bridge()
            finally:
                self._bridged.discard(transfers)
