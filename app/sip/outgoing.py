"""Outgoing SIP calls: `medium: {"sip": {"outgoing": {...}}}` dialled by callbridge's own user agent.

The INVITE carries our offer; 401/407 are answered with digest once per challenge; 180/183 are recorded as
`ringing`; a final refusal (486, 480, 603, 404...) or no answer within CALLBRIDGE_DIAL_RING_TIMEOUT ends the
call `unjoined` with a `sip_status` event; a 2xx is acknowledged and the call runs like an incoming one.
A call ended while it rings (the API's hang-up) is CANCELled.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.errors import InvalidInput
from app.schemas.calls import EndReason, EventSeverity
from app.schemas.media import Medium, SipOutgoing
from app.sip.custom_headers import check_custom_headers
from app.sip.dialog import Dialog, LocalAddress, peer_for_uri
from app.sip.digest import DigestClient, authorize
from app.sip.leg import ALLOW, SipLeg
from app.sip.media_setup import SipMediaSetup, point_rtp
from app.sip.message import (
    Headers,
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    new_call_id,
    new_tag,
    parse_uri,
)
from app.sip.message_log import SipMessageLog
from app.sip.rtp_session import RtpSession
from app.sip.sdp import Negotiated, NoCommonCodec, SdpError, accept_answer, build_offer, parse_sdp
from app.sip.session_timer import accepted_interval, allows_update, offer_headers, retry_after_too_small
from app.sip.transaction import ClientTransaction
from app.sip.transport import Peer, resolve_peer
from app.sip.user_agent import STOP_GRACE_S, SipUserAgent
from app.store.tables import CallRow, utcnow

if TYPE_CHECKING:
    from app.services import Services
    from app.sip.running import SipCallRunner

log = logging.getLogger(__name__)

#: Challenges answered per call: a second 401/407 after our answer means the credentials are wrong.
MAX_CHALLENGES = 2


@dataclass(frozen=True)
class SipDialPlan:
    """A validated outgoing SIP medium."""

    to: SipUri
    from_: SipUri
    username: str | None
    password: str | None = field(repr=False)
    headers: dict[str, str]
    tls_verify: bool = True


@dataclass(frozen=True)
class Connected:
    """An answered dial: its leg (ACK sent) and its RTP stream, pointed at the callee."""

    leg: SipLeg
    rtp: RtpSession
    negotiated: Negotiated


@dataclass(frozen=True)
class Unanswered:
    """Why a dial got no call: a SIP status (0 when none came) and its reason."""

    status: int
    reason: str
    #: Ended by whoever hung up (nothing more to record).
    cancelled: bool = False
    #: Answered, with SDP that cannot be used (the callee was sent BYE).
    unusable_answer: bool = False


@dataclass
class _Ringing:
    """A dial under way: set `cancel` to CANCEL it."""

    row: CallRow
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[Any] | None = None


class SipDialer:
    """Places the outgoing SIP calls of this instance."""

    def __init__(
        self,
        ua: SipUserAgent,
        services: Services,
        media: SipMediaSetup,
        runner: SipCallRunner,
        ring_timeout_s: float,
        messages: SipMessageLog,
    ) -> None:
        self._ua = ua
        self._services = services
        self._media = media
        self._runner = runner
        self._ring_timeout_s = ring_timeout_s
        self._messages = messages
        self._ringing: dict[str, _Ringing] = {}
        services.calls.ended_hooks.append(self._call_ended)

    @property
    def transports_listening(self) -> set[str]:
        return self._ua.transports_listening

    # --- the API's side -----------------------------------------------------------------------

    def plan(self, medium: Medium) -> SipDialPlan:
        """The dial a `sip` medium asks for; 400 when it cannot be placed."""
        sip = medium.sip
        if sip is None or sip.outgoing is None:
            raise InvalidInput(
                "unsupported_medium", "sip calls made through the API need medium.sip.outgoing"
            )
        return self._plan(sip.outgoing)

    def _plan(self, outgoing: SipOutgoing) -> SipDialPlan:
        to = _uri("to", outgoing.to)
        if to.transport not in self._ua.transports_listening:
            raise InvalidInput(
                "invalid_request",
                f"medium.sip.outgoing.to: {to.transport} is not among CALLBRIDGE_SIP_LISTEN's transports",
            )
        from_ = (
            _uri("from", outgoing.from_)
            if ":" in outgoing.from_
            else SipUri("sip", outgoing.from_, self._ua.public_host, None, {})
        )
        try:
            headers = check_custom_headers(outgoing.headers, "medium.sip.outgoing.headers")
        except ValueError as exc:
            raise InvalidInput("invalid_request", str(exc)) from None
        return SipDialPlan(to, from_, outgoing.username, outgoing.password, headers, outgoing.tls_verify)

    async def dial(self, row: CallRow, plan: SipDialPlan) -> CallRow:
        """Start dialling (in the background: the API answers at once) and record it."""
        self._ringing[row.id] = ringing = _Ringing(row)
        self._services.calls.events.record(
            row.id,
            row.created,
            "dialled",
            f"calling {plan.to} over SIP from {plan.from_}",
            extras={"to": str(plan.to), "from": str(plan.from_)},
        )
        ringing.task = self._ua.spawn(self._dial(row, plan), f"sip-dial-{row.id}")
        return row

    async def stop(self) -> None:
        """Shutdown: the calls still ringing end (`system_error`), and get a moment to CANCEL."""
        ringing = list(self._ringing.values())
        for dial in ringing:
            await self._services.calls.end(
                dial.row, EndReason.SYSTEM_ERROR, "the server shut down while the call was ringing"
            )
        dialling = {dial.task for dial in ringing if dial.task is not None}
        if dialling:
            await asyncio.wait(dialling, timeout=STOP_GRACE_S)

    def _call_ended(self, row: CallRow, reason: EndReason) -> None:
        ringing = self._ringing.get(row.id)
        if ringing is not None:
            ringing.cancel.set()

    # --- the dial -----------------------------------------------------------------------------

    async def _dial(self, row: CallRow, plan: SipDialPlan) -> None:
        try:
            await self._place(row, plan)
        finally:
            self._ringing.pop(row.id, None)

    async def _place(self, row: CallRow, plan: SipDialPlan) -> None:
        call_id = new_call_id(self._ua.public_host)
        self._messages.bind(call_id, row)  # its sip_logs, from the INVITE on
        try:
            await self._place_as(row, plan, call_id)
        finally:
            self._messages.release(call_id)

    async def _place_as(self, row: CallRow, plan: SipDialPlan, call_id: str) -> None:
        calls = self._services.calls
        try:
            ringing = self._ringing[row.id]
            placed = await self.connect(
                plan,
                self._media.codecs,
                ringing.cancel,
                lambda response: self._record_ringing(row, response),
                call_id=call_id,
            )
        except Exception:  # the call must end, whatever broke
            log.exception("SIP call %s: placing it failed", row.id)
            await calls.end(row, EndReason.SYSTEM_ERROR, "internal error while placing the SIP call")
            return
        if isinstance(placed, Unanswered):
            if placed.unusable_answer:
                await calls.end(row, EndReason.CONNECTION_ERROR, placed.reason)
            elif not placed.cancelled:
                await self._failed(row, placed.status, placed.reason)
            return
        try:  # the RTP session is the call's from here on; closing it again is harmless
            await self._run_answered(row, placed)
        except Exception:  # the call must end, whatever broke
            placed.leg.hang_up()  # no-op once the dialog is over
            log.exception("SIP call %s: running it failed", row.id)
            await calls.end(row, EndReason.SYSTEM_ERROR, "internal error while placing the SIP call")
        finally:
            placed.rtp.close()

    async def _run_answered(self, row: CallRow, placed: Connected) -> None:
        ringing = self._ringing.pop(row.id, None)
        if ringing is None or ringing.cancel.is_set():  # hung up as it was answered
            placed.leg.hang_up()
            return
        await self._services.calls_repo.mark_answered(row.id, utcnow())
        await self._runner.run(row, placed.leg, placed.rtp, placed.negotiated)

    async def connect(
        self,
        plan: SipDialPlan,
        codecs: list[str],
        cancel: asyncio.Event,
        on_ringing: Callable[[SipResponse], None],
        *,
        call_id: str | None = None,
    ) -> Connected | Unanswered:
        """Dial `plan` offering `codecs` (best first) until answered, refused, out of time or `cancel`led;
        the INVITE's Call-ID is `call_id` when given (a call's sip_logs are bound to it first).

        Answered: the dialog's leg (ACK sent) and its RTP stream pointed at the callee, which the caller
        closes. Also places a transfer's second leg (`app.sip.bridge`)."""
        try:
            peer = await resolve_peer(peer_for_uri(plan.to, tls_verify=plan.tls_verify))
        except OSError as exc:
            return Unanswered(0, f"cannot resolve {plan.to.host}: {exc}")
        rtp = await self._media.open_rtp()
        if rtp is None:
            return Unanswered(0, "no RTP port was free for the call")
        try:
            connected = await self._connect(plan, codecs, peer, rtp, cancel, on_ringing, call_id)
        except BaseException:
            rtp.close()
            raise
        if isinstance(connected, Unanswered):
            rtp.close()
        return connected

    async def _connect(
        self,
        plan: SipDialPlan,
        codecs: list[str],
        peer: Peer,
        rtp: RtpSession,
        cancel: asyncio.Event,
        on_ringing: Callable[[SipResponse], None],
        call_id: str | None,
    ) -> Connected | Unanswered:
        """INVITE until answered (or not); an answered call is acknowledged."""
        here = self._ua.here(peer.transport, secure=plan.to.scheme == "sips")
        invite = self.invite(plan, here, rtp, codecs, call_id)
        answered = await self._ring(invite, peer, plan, cancel, on_ringing)
        if isinstance(answered, Unanswered):
            return answered
        invite, answer = answered
        dialog = Dialog.as_uac(invite, answer, peer, here)
        dialog.peer = await answered_next_hop(dialog, peer)
        leg = self._ua.open_leg(dialog, invite.body)
        leg.peer_allows_update = allows_update(answer.headers)
        try:
            leg.session_timer.start(accepted_interval(answer))
        except SipParseError:  # a garbled Session-Expires: the call runs without a session timer
            log.info("SIP call %s: unusable Session-Expires in the answer", dialog.call_id)
        try:
            await leg.acknowledge()
            negotiated = accept_answer(codecs, parse_sdp(answer.body))
        except (SdpError, NoCommonCodec) as exc:
            leg.hang_up()
            return Unanswered(answer.status, f"the callee's answer is unusable: {exc}", unusable_answer=True)
        except BaseException:
            leg.hang_up()
            raise
        point_rtp(rtp, negotiated)
        return Connected(leg, rtp, negotiated)

    def invite(
        self,
        plan: SipDialPlan,
        here: LocalAddress,
        rtp: RtpSession,
        codecs: list[str],
        call_id: str | None = None,
    ) -> SipRequest:
        """The INVITE for `plan`, offering `codecs` on `rtp`'s port (a new Call-ID unless given)."""
        offer = build_offer(codecs, self._media.sdp_host, rtp.local_port, self._media.session_id())
        headers = Headers()
        headers.add("Via", here.via())
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<{plan.from_}>;tag={new_tag()}")
        headers.add("To", f"<{plan.to}>")
        headers.add("Call-ID", call_id or new_call_id(here.host))
        headers.add("CSeq", "1 INVITE")
        headers.add("Contact", here.contact())
        headers.add("Allow", ALLOW)
        headers.add("User-Agent", "callbridge")
        for name, value in offer_headers().items():
            headers.add(name, value)
        for name, value in plan.headers.items():
            headers.add(name, value)
        headers.add("Content-Type", "application/sdp")
        return SipRequest("INVITE", plan.to, headers, offer)

    async def _ring(
        self,
        invite: SipRequest,
        peer: Peer,
        plan: SipDialPlan,
        cancel: asyncio.Event,
        on_ringing: Callable[[SipResponse], None],
    ) -> tuple[SipRequest, SipResponse] | Unanswered:
        """The INVITE that got through and its 2xx (challenges answered), or why there is none."""
        digest = (
            DigestClient(plan.username or plan.from_.user or "", plan.password) if plan.password else None
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ring_timeout_s
        request = invite
        interval_retried = False
        for _ in range(MAX_CHALLENGES + 2):  # the first INVITE, the challenges, and one 422's retry
            transaction = self._ua.transactions.request(request, peer)
            final = await self._until_final(transaction, cancel, deadline, on_ringing)
            if isinstance(final, Unanswered):
                return final
            longer = retry_after_too_small(request, final) if not interval_retried else None
            if longer is not None:  # 422: once more with the callee's Min-SE (RFC 4028 §7.4)
                request, interval_retried = longer, True
                continue
            if final.status in (401, 407) and digest is not None:
                challenged = authorize(request, final, digest)
                if challenged is not None:
                    request = challenged
                    continue
            if final.status >= 300:
                return Unanswered(final.status, final.reason)
            return request, final
        return Unanswered(401, "the credentials were refused")

    async def _until_final(
        self,
        transaction: ClientTransaction,
        cancel: asyncio.Event,
        deadline: float,
        on_ringing: Callable[[SipResponse], None],
    ) -> SipResponse | Unanswered:
        provisional = asyncio.Event()
        responses = asyncio.ensure_future(_final_after_ringing(transaction, provisional, on_ringing))
        cancelled = asyncio.ensure_future(cancel.wait())
        timeout = max(0.0, deadline - asyncio.get_running_loop().time())
        try:
            done, _ = await asyncio.wait(
                (responses, cancelled), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            cancelled.cancel()
        if responses in done:
            return responses.result()
        # Hung up, or nobody answered in time: CANCEL, and see how the INVITE ends. A CANCEL may only follow
        # a provisional response (RFC 3261 §9.1): until one comes (Timer B bounds it), it waits.
        if not provisional.is_set():
            heard = asyncio.ensure_future(provisional.wait())
            try:
                await asyncio.wait((responses, heard), return_when=asyncio.FIRST_COMPLETED)
            finally:
                heard.cancel()
        if not responses.done():
            await self._ua.transactions.request(transaction.cancel_request(), transaction.peer).final()
        final = await responses
        if final.status < 300:  # answered as we cancelled: take the call (ended at once if hung up)
            return final
        if cancel.is_set():
            return Unanswered(final.status, final.reason, cancelled=True)
        return Unanswered(final.status, f"nobody answered within {self._ring_timeout_s:g} s")

    def _record_ringing(self, row: CallRow, response: SipResponse) -> None:
        self._services.calls.events.record(
            row.id,
            row.created,
            "ringing",
            f"the callee is ringing ({response.status} {response.reason})",
            extras={"code": response.status, "reason": response.reason},
        )

    async def _failed(self, row: CallRow, status: int, reason: str) -> None:
        calls = self._services.calls
        calls.events.record(
            row.id,
            row.created,
            "sip_status",
            f"the call was not answered: {status} {reason}" if status else f"the call failed: {reason}",
            EventSeverity.WARNING,
            {"code": status, "reason": reason},
        )
        await calls.end(row, EndReason.UNJOINED, f"SIP {status} {reason}" if status else reason)


async def _final_after_ringing(
    transaction: ClientTransaction, provisional: asyncio.Event, on_ringing: Callable[[SipResponse], None]
) -> SipResponse:
    """The INVITE's final response; the first 180/183 goes to `on_ringing`."""
    rang = False
    async for response in transaction.responses():
        if response.status >= 200:
            return response
        provisional.set()
        if response.status in (180, 183) and not rang:
            rang = True
            on_ringing(response)
    raise AssertionError("a client transaction always ends with a final response")


def _uri(name: str, value: str) -> SipUri:
    try:
        uri = parse_uri(value)
    except SipParseError as exc:
        raise InvalidInput("invalid_sip_uri", f"medium.sip.outgoing.{name}: {exc}") from None
    if uri.scheme not in ("sip", "sips"):
        raise InvalidInput("invalid_sip_uri", f"medium.sip.outgoing.{name}: a sip: URI is needed")
    return uri


async def answered_next_hop(dialog: Dialog, dialled: Peer) -> Peer:
    """Where the ACK and later requests go: the first route; else the callee's Contact, unless it names a
    private address while we dialled a public one (a softphone behind NAT answering directly): then
    where we dialled, which reached it. Over TLS without a route set: the connection we dialled, whose
    certificate was checked against the name dialled (a Contact's bare address could not be)."""
    if dialog.route_set:
        return peer_for_uri(dialog.route_set[0].uri, tls_verify=dialled.tls_verify)
    if dialled.transport == "tls":
        return dialled
    try:
        target = await resolve_peer(peer_for_uri(dialog.remote_target))
    except OSError:
        return dialled
    if _is_private(target.host) and not _is_private(dialled.host):
        return dialled
    return target


def _is_private(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_private
    except ValueError:
        return False
