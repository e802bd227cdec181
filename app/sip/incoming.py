"""Incoming SIP calls: an INVITE from an allowed address, routed to an agent, answered, and run.

The order is ARCHITECTURE §3.1's: the source address first (403, nothing created), then the route (404),
the offer (488 when no codec is common), the call's slot (503 with Retry-After), then 100 → 180 → 200 with
our answer; the call joins when the ACK arrives. A CANCEL while it rings ends it `unjoined` with 487.

An INVITE no route matches goes to the account's fallback handler when there is one (app.sip.fallback),
once its offer has passed the checks above: its decision starts an agent call, a call without an agent,
or refuses the INVITE; a handler that fails to decide in time gets the caller a 480.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.calls.service import CallOrigin, Creation
from app.errors import InvalidInput, TooManyRequests
from app.metrics import SIP_FALLBACK_ANSWERS
from app.providers.base import IncomingCall
from app.schemas.agents import CallTemplate
from app.schemas.calls import EndReason, EventSeverity, StartAgentCallRequest, StartCallRequest
from app.schemas.media import Medium, SipMedium
from app.schemas.sip import FallbackHandler
from app.schemas.sip_fallback import RejectCall, StartAgentCall
from app.sip.dialog import Dialog
from app.sip.fallback import FallbackDecision, FallbackFailed, ask_handler
from app.sip.leg import ALLOW, SipLeg
from app.sip.media_setup import SipMediaSetup, point_rtp
from app.sip.message import SipRequest, SipResponse, new_tag, response_to
from app.sip.message_log import SipMessageLog
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
from app.sip.session_timer import OPTION_TAG, allows_update, refusal
from app.sip.transaction import ServerTransaction
from app.sip.transport import Peer
from app.sip.user_agent import SipUserAgent
from app.store.tables import AgentRow, CallRow

if TYPE_CHECKING:
    from app.services import Services
    from app.sip.registrations import SipRegistrations

log = logging.getLogger(__name__)

#: SIP extensions an INVITE may Require (100rel is not implemented).
SUPPORTED: frozenset[str] = frozenset({OPTION_TAG})
#: Seconds a caller refused for capacity (or a drain) is told to wait.
RETRY_AFTER_S = 5


@dataclass(frozen=True)
class AgentRoute:
    """The INVITE becomes a call from `agent`'s template, with `overrides` (a fallback handler's)."""

    agent: AgentRow
    overrides: StartAgentCallRequest


#: Where an INVITE goes: an agent, or (a fallback handler's `startCall`) a call without one.
Route = AgentRoute | StartCallRequest


class IncomingCalls:
    """The user agent's RequestHandler: the account's SIP policy applied to each new request."""

    def __init__(
        self,
        ua: SipUserAgent,
        services: Services,
        media: SipMediaSetup,
        runner: SipCallRunner,
        messages: SipMessageLog,
        registrations: SipRegistrations | None = None,
    ) -> None:
        self._ua = ua
        self._services = services
        self._media = media
        self._runner = runner
        self._messages = messages
        self._registrations = registrations

    def source_allowed(self, host: str) -> bool:
        return self._services.sip_policy.current().source_allowed(host) or self._from_registrar(host)

    def _from_registrar(self, host: str) -> bool:
        """A registrar (or outbound proxy) holding one of our bindings may send calls on it, inside
        `allowedCidrRanges` or not."""
        return self._registrations is not None and self._registrations.is_registrar(host)

    def _called_user(self, request: SipRequest) -> str | None:
        """The user an INVITE is routed by: the Request-URI user, or the To user when the INVITE came to
        a registration's Contact (see `SipRegistrations.called_user`)."""
        if self._registrations is None:
            return request.uri.user
        return self._registrations.called_user(request)

    async def invite(self, request: SipRequest, peer: Peer, transaction: ServerTransaction) -> None:
        self._messages.expect(request, peer)  # its sip_logs start with this INVITE
        try:
            await transaction.respond(response_to(request, 100))
            try:
                refusal = await self._answer(request, peer, transaction)
            except Exception:  # a bug must not leave the caller retransmitting into silence
                log.exception("SIP: answering INVITE %s failed", request.call_id)
                refusal = response_to(request, 500)
            if refusal is not None:
                await transaction.respond(refusal)
        finally:
            self._messages.release(request.call_id)

    async def _answer(
        self, request: SipRequest, peer: Peer, transaction: ServerTransaction
    ) -> SipResponse | None:
        """Answer and run the call; or the response that refuses it."""
        services = self._services
        if services.draining:
            return _retry_later(request, "Service Unavailable (shutting down)")
        if not services.cluster.available:
            return _retry_later(request, "Service Unavailable (cluster state unreachable)")
        policy = services.sip_policy.current()
        route: Route | None = None
        agent_id = policy.route(self._called_user(request))
        if agent_id is not None:
            agent = await services.agents.get(agent_id)
            if agent is None:
                return response_to(request, 404)
            route = AgentRoute(agent, StartAgentCallRequest())
        elif policy.fallback is None:
            return response_to(request, 404)
        unsupported = [tag for tag in request.headers.get_all("Require") if tag.lower() not in SUPPORTED]
        if unsupported:
            response = response_to(request, 420)
            response.headers.add("Unsupported", ", ".join(unsupported))
            return response
        refused = refusal(request)  # a session interval we cannot take: 422 before anything is made
        if refused is not None:
            return refused
        if request.content_type != "application/sdp" or not request.body:
            return _not_acceptable(request, "callbridge needs an SDP offer in the INVITE")
        try:
            offer = parse_sdp(request.body)
        except SdpError as exc:
            return response_to(request, 400, f"Bad Request (SDP: {exc})"[:120])
        if route is None:
            assert policy.fallback is not None
            decided = await self._ask_fallback(request, peer, transaction, policy.fallback)
            if isinstance(decided, SipResponse):
                return decided
            route = decided
        rtp = await self._media.open_rtp()
        if rtp is None:
            return _retry_later(request, "Service Unavailable (no free RTP port)")
        try:  # the RTP session is the call's from here on; closing it again is harmless
            return await self._answer_with(request, peer, transaction, route, offer, rtp)
        finally:
            rtp.close()

    async def _ask_fallback(
        self, request: SipRequest, peer: Peer, transaction: ServerTransaction, handler: FallbackHandler
    ) -> Route | SipResponse:
        """The fallback handler's route for the INVITE, or the response that ends it (its reject, 480 when
        it gave no usable answer in time, 487 when the caller CANCELled meanwhile). The INVITE's 100 was
        sent already, so the caller waits without retransmitting."""
        services = self._services
        asking = asyncio.ensure_future(
            ask_handler(services.legs.http, handler, request, peer, services.settings.sip_fallback_timeout)
        )
        cancelled = asyncio.ensure_future(transaction.cancel_received.wait())
        try:
            await asyncio.wait((asking, cancelled), return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancelled.cancel()
        if not asking.done():  # the caller gave up: the handler's answer no longer matters
            asking.cancel()
            SIP_FALLBACK_ANSWERS.labels("cancelled").inc()
            return response_to(request, 487)
        try:
            decision = asking.result()
            route = await self._fallback_route(decision)
        except FallbackFailed as exc:
            SIP_FALLBACK_ANSWERS.labels("failed").inc()
            log.warning("SIP: INVITE %s from %s: %s", request.call_id, peer.host, exc.reason)
            return response_to(request, 480, f"Temporarily Unavailable ({exc.reason})"[:120])
        if isinstance(route, RejectCall):
            SIP_FALLBACK_ANSWERS.labels("reject").inc()
            return response_to(request, route.sip_reject_code, route.message)
        outcome = "start_agent_call" if isinstance(route, AgentRoute) else "start_call"
        SIP_FALLBACK_ANSWERS.labels(outcome).inc()
        return route

    async def _fallback_route(self, decision: FallbackDecision) -> Route | RejectCall:
        if not isinstance(decision, StartAgentCall):
            return decision
        agent = await self._services.agents.get(decision.agent_id)
        if agent is None:
            raise FallbackFailed(f"the fallback handler named an unknown agent ({decision.agent_id})")
        overrides = StartAgentCallRequest.model_validate(decision.model_dump(exclude={"agent_id"}))
        return AgentRoute(agent, overrides)

    async def _answer_with(
        self,
        request: SipRequest,
        peer: Peer,
        transaction: ServerTransaction,
        route: Route,
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
            row = await self._create_call(request, route)
        except TooManyRequests:
            return _retry_later(request, "Service Unavailable (every call slot is taken)")
        except InvalidInput as exc:
            return response_to(request, 400, f"Bad Request ({exc.detail})"[:120])
        self._messages.bind(request.call_id, row)
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
            ok.headers.add("Supported", OPTION_TAG)
            leg.peer_allows_update = allows_update(request.headers)
            leg.time_session(request, ok)
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

    async def _create_call(self, request: SipRequest, route: Route) -> CallRow:
        from_ = request.from_
        caller_id = from_.uri.user
        medium = Medium(
            sip=SipMedium(
                incoming={"from": str(from_.uri), "to": str(request.to.uri), "sipCallId": request.call_id}
            )
        )
        incoming = IncomingCall(
            provider_call_id=request.call_id, from_number=caller_id, to_number=self._called_user(request)
        )
        calls = self._services.calls
        if isinstance(route, StartCallRequest):  # no agent, so no template context to fill
            origin = CallOrigin(provider="sip", incoming=incoming)
            direct = route.model_copy(update={"medium": medium})
            row, _ = await calls.create_call(direct, Creation(origin=origin))
            return row
        sip = sip_context(request.headers.items(), caller_id, from_.display_name, str(from_.uri))
        template = CallTemplate.model_validate(route.agent.call_template)
        fitted = template_context(sip, template.context_schema)
        origin = CallOrigin(provider="sip", incoming=incoming, request_context=fitted.context)
        overrides = route.overrides.model_copy(update={"medium": medium})
        row, _ = await calls.create_agent_call(route.agent, overrides, Creation(origin=origin))
        if fitted.dropped:
            calls.events.record(
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
