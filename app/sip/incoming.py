"""Incoming SIP calls: an INVITE from an allowed address, routed to an agent, answered, and run.

The order is ARCHITECTURE §3.1's: the source address first (403, nothing created), then the route (404),
the offer (488 when no codec is common), the call's slot (503 with Retry-After), then 100 → 180 → 200 with
our answer; the call joins when the ACK arrives. A CANCEL while it rings ends it `unjoined` with 487.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from app.calls.service import CallOrigin, Creation
from app.errors import InvalidInput, TooManyRequests
from app.providers.base import IncomingCall
from app.schemas.agents import CallTemplate
from app.schemas.calls import EndReason, EventSeverity, StartAgentCallRequest
from app.schemas.media import Medium, SipMedium
from app.sip.dialog import Dialog
from app.sip.leg import ALLOW, SipLeg
from app.sip.media_setup import SipMediaSetup, point_rtp
from app.sip.message import SipRequest, SipResponse, new_tag, response_to
from app.sip.routing import sip_context, template_context
from app.sip.rtp_session import RtpSession
from app.sip.running import SipCallRunner
from app.sip.sdp import (
    Negotiated,
    NoCommonCodec,
    SdpError,
    SessionDescription,
    answer_offer,
    parse_sdp,
)
from app.sip.transaction import ServerTransaction
from app.sip.transport import Peer
from app.sip.user_agent import SipUserAgent
from app.store.tables import AgentRow, CallRow

if TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger(__name__)

#: SIP extensions an INVITE may Require (none yet: 100rel and session timers are not implemented).
SUPPORTED: frozenset[str] = frozenset()
#: Seconds a caller refused for capacity (or a drain) is told to wait.
RETRY_AFTER_S = 5


class IncomingCalls:
    """The user agent's RequestHandler: the account's SIP policy applied to each new request."""

    def __init__(
        self, ua: SipUserAgent, services: Services, media: SipMediaSetup, runner: SipCallRunner
    ) -> None:
        self._ua = ua
        self._services = services
        self._media = media
        self._runner = runner

    def source_allowed(self, host: str) -> bool:
        return self._services.sip_policy.current().source_allowed(host)

    async def invite(self, request: SipRequest, peer: Peer, transaction: ServerTransaction) -> None:
        await transaction.respond(response_to(request, 100))
        try:
            refusal = await self._answer(request, peer, transaction)
        except Exception:  # a bug must not leave the caller retransmitting into silence
            log.exception("SIP: answering INVITE %s failed", request.call_id)
            refusal = response_to(request, 500)
        if refusal is not None:
            await transaction.respond(refusal)

    async def _answer(
        self, request: SipRequest, peer: Peer, transaction: ServerTransaction
    ) -> SipResponse | None:
        """Answer and run the call; or the response that refuses it."""
        services = self._services
        if services.draining:
            return _retry_later(request, "Service Unavailable (shutting down)")
        agent_id = services.sip_policy.current().route(request.uri.user)
        agent = await services.agents.get(agent_id) if agent_id else None
        if agent is None:
            return response_to(request, 404)
        unsupported = [tag for tag in request.headers.get_all("Require") if tag.lower() not in SUPPORTED]
        if unsupported:
            response = response_to(request, 420)
            response.headers.add("Unsupported", ", ".join(unsupported))
            return response
        if request.content_type != "application/sdp" or not request.body:
            return _not_acceptable(request, "callbridge needs an SDP offer in the INVITE")
        try:
            offer = parse_sdp(request.body)
        except SdpError as exc:
            return response_to(request, 400, f"Bad Request (SDP: {exc})"[:120])
        rtp = await self._media.open_rtp()
        if rtp is None:
            return _retry_later(request, "Service Unavailable (no free RTP port)")
        try:  # the RTP session is the call's from here on; closing it again is harmless
            return await self._answer_with(request, peer, transaction, agent, offer, rtp)
        finally:
            rtp.close()

    async def _answer_with(
        self,
        request: SipRequest,
        peer: Peer,
        transaction: ServerTransaction,
        agent: AgentRow,
        offer: SessionDescription,
        rtp: RtpSession,
    ) -> SipResponse | None:
        media, calls = self._media, self._services.calls
        try:
            answer, negotiated = answer_offer(
                offer, media.codecs, media.sdp_host, rtp.local_port, media.session_id()
            )
        except NoCommonCodec as exc:
            return _not_acceptable(request, exc.warning)
        if transaction.cancelled:  # the caller gave up while we looked the agent up
            return response_to(request, 487)
        try:
            row = await self._create_call(request, agent)
        except TooManyRequests:
            return _retry_later(request, "Service Unavailable (every call slot is taken)")
        except InvalidInput as exc:
            return response_to(request, 400, f"Bad Request ({exc.detail})"[:120])
        try:
            await self._ring_and_answer(request, peer, transaction, row, answer, negotiated, rtp)
        except Exception:  # the call was made: it must end, whatever broke
            await calls.end(row, EndReason.SYSTEM_ERROR, "internal error while answering the SIP call")
            raise
        return None

    async def _ring_and_answer(
        self,
        request: SipRequest,
        peer: Peer,
        transaction: ServerTransaction,
        row: CallRow,
        answer: bytes,
        negotiated: Negotiated,
        rtp: RtpSession,
    ) -> None:
        calls = self._services.calls
        local_tag = new_tag()
        await transaction.respond(_in_dialog_response(request, 180, local_tag))
        if await self._cancelled_while_ringing(transaction):
            await transaction.respond(response_to(request, 487, to_tag=local_tag))
            await calls.end(row, EndReason.UNJOINED, "the caller hung up before the call was answered")
            return
        here = self._ua.here(peer.transport, secure=request.uri.scheme == "sips")
        dialog = Dialog.as_uas(request, local_tag, peer, here)
        dialog.peer = dialog.next_hop(peer)
        leg = self._ua.open_leg(dialog, answer)
        try:
            point_rtp(rtp, negotiated)
            ok = _in_dialog_response(request, 200, local_tag)
            ok.headers.add("Contact", here.contact())
            ok.headers.add("Allow", ALLOW)
            ok.headers.add("Content-Type", "application/sdp")
            ok.body = answer
            await transaction.respond(ok)
            confirmed = await _confirmed(transaction, leg)
            if confirmed is None:
                text = "the caller hung up as the call was answered (BYE before the ACK)"
                await calls.end(row, EndReason.HANGUP, text)
            elif not confirmed:
                leg.hang_up()
                text = "the caller never acknowledged the answer (no ACK)"
                await calls.end(row, EndReason.CONNECTION_ERROR, text)
            else:
                await self._runner.run(row, leg, rtp, negotiated)
        except Exception:
            leg.hang_up()  # no-op once the dialog is over
            raise

    async def _create_call(self, request: SipRequest, agent: AgentRow) -> CallRow:
        from_ = request.from_
        caller_id = from_.uri.user
        sip = sip_context(request.headers.items(), caller_id, from_.display_name, str(from_.uri))
        template = CallTemplate.model_validate(agent.call_template)
        fitted = template_context(sip, template.context_schema)
        medium = Medium(
            sip=SipMedium(
                incoming={"from": str(from_.uri), "to": str(request.to.uri), "sipCallId": request.call_id}
            )
        )
        origin = CallOrigin(
            provider="sip",
            incoming=IncomingCall(
                provider_call_id=request.call_id,
                from_number=caller_id,
                to_number=request.uri.user,
            ),
            request_context=fitted.context,
        )
        row, _ = await self._services.calls.create_agent_call(
            agent, StartAgentCallRequest(medium=medium), Creation(origin=origin)
        )
        if fitted.dropped:
            self._services.calls.events.record(
                row.id,
                row.created,
                "sip_headers_dropped",
                "X- headers left out of the context: " + "; ".join(fitted.dropped),
                EventSeverity.WARNING,
            )
        return row

    async def _cancelled_while_ringing(self, transaction: ServerTransaction) -> bool:
        """Ring for CALLBRIDGE_SIP_ANSWER_DELAY (0: answer at once); True when a CANCEL came first."""
        delay = self._media.answer_delay_s
        if transaction.cancelled:
            return True
        if delay <= 0:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await transaction.cancel_received.wait()
        return transaction.cancelled


async def _confirmed(transaction: ServerTransaction, leg: SipLeg) -> bool | None:
    """True when the 200 is ACKed; False when no ACK came within 64*T1; None when the caller's BYE came
    first (its ACK may have been lost: the BYE confirms the dialog all the same)."""
    hung_up = asyncio.ensure_future(leg.hung_up.wait())
    try:
        await asyncio.wait((transaction.acked, hung_up), return_when=asyncio.FIRST_COMPLETED)
    finally:
        hung_up.cancel()
    if transaction.acked.done():
        return transaction.acked.result()
    return None


def _in_dialog_response(request: SipRequest, status: int, local_tag: str) -> SipResponse:
    """A response that creates the dialog: our To tag, and the request's Record-Route copied back in order
    (RFC 3261 §12.1.1), so the caller's ACK and BYE take the proxies ours take."""
    response = response_to(request, status, to_tag=local_tag)
    for route in request.headers.get_all("Record-Route"):
        response.headers.add("Record-Route", route)
    return response


def _retry_later(request: SipRequest, reason: str) -> SipResponse:
    response = response_to(request, 503, reason)
    response.headers.add("Retry-After", str(RETRY_AFTER_S))
    return response


def _not_acceptable(request: SipRequest, warning: str) -> SipResponse:
    response = response_to(request, 488)
    response.headers.add("Warning", f'305 callbridge "{warning}"')
    return response
