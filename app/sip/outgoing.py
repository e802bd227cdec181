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
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.errors import InvalidInput
from app.schemas.calls import EndReason, EventSeverity
from app.schemas.media import Medium, SipOutgoing
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
from app.sip.rtp_session import RtpSession
from app.sip.running import SipCallRunner
from app.sip.sdp import NoCommonCodec, SdpError, accept_answer, build_offer, parse_sdp
from app.sip.transaction import ClientTransaction
from app.sip.transport import Peer, resolve_peer
from app.sip.user_agent import STOP_GRACE_S, SipUserAgent
from app.store.tables import CallRow, utcnow

if TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger(__name__)

#: Headers callbridge writes itself: `outgoing.headers` may not set them.
MANAGED_HEADERS = frozenset(
    name.lower()
    for name in (
        "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Max-Forwards", "Content-Type", "Content-Length",
        "Route", "Record-Route", "Authorization", "Proxy-Authorization", "Allow",
    )
)  # fmt: skip
MAX_CUSTOM_HEADERS = 20
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]{1,64}$")
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
    ) -> None:
        self._ua = ua
        self._services = services
        self._media = media
        self._runner = runner
        self._ring_timeout_s = ring_timeout_s
        self._ringing: dict[str, _Ringing] = {}
        services.calls.ended_hooks.append(self._call_ended)

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
        headers = dict(outgoing.headers)
        if len(headers) > MAX_CUSTOM_HEADERS:
            raise InvalidInput(
                "invalid_request", f"medium.sip.outgoing.headers: at most {MAX_CUSTOM_HEADERS}"
            )
        for name, value in headers.items():
            if not _TOKEN.match(name) or name.lower() in MANAGED_HEADERS:
                raise InvalidInput(
                    "invalid_request", f"medium.sip.outgoing.headers: {name!r} cannot be set on the INVITE"
                )
            if "\r" in value or "\n" in value or len(value) > 1024:
                raise InvalidInput(
                    "invalid_request",
                    f"medium.sip.outgoing.headers.{name}: one line of at most 1024 characters",
                )
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
        calls = self._services.calls
        try:
            peer = await resolve_peer(peer_for_uri(plan.to, tls_verify=plan.tls_verify))
        except OSError as exc:
            await self._failed(row, 0, f"cannot resolve {plan.to.host}: {exc}")
            return
        rtp = await self._media.open_rtp()
        if rtp is None:
            await calls.end(row, EndReason.UNJOINED, "no RTP port was free for the call")
            return
        try:  # the RTP session is the call's from here on; closing it again is harmless
            await self._connect(row, plan, peer, rtp)
        except Exception:  # the call must end, whatever broke
            log.exception("SIP call %s: placing it failed", row.id)
            await calls.end(row, EndReason.SYSTEM_ERROR, "internal error while placing the SIP call")
        finally:
            rtp.close()

    async def _connect(self, row: CallRow, plan: SipDialPlan, peer: Peer, rtp: RtpSession) -> None:
        """INVITE until answered (or not); an answered call is acknowledged and run."""
        here = self._ua.here(peer.transport, secure=plan.to.scheme == "sips")
        answered = await self._ring(row, self._invite(row, plan, here, rtp), peer, plan)
        if answered is None:
            return
        invite, answer = answered
        dialog = Dialog.as_uac(invite, answer, peer, here)
        dialog.peer = await answered_next_hop(dialog, peer)
        leg = self._ua.open_leg(dialog, invite.body)
        try:
            await self._run_answered(row, leg, answer, rtp)
        except Exception:
            leg.hang_up()  # no-op once the dialog is over
            raise

    async def _run_answered(self, row: CallRow, leg: SipLeg, answer: SipResponse, rtp: RtpSession) -> None:
        calls = self._services.calls
        await leg.acknowledge()
        try:
            negotiated = accept_answer(self._media.codecs, parse_sdp(answer.body))
        except (SdpError, NoCommonCodec) as exc:
            leg.hang_up()
            await calls.end(row, EndReason.CONNECTION_ERROR, f"the callee's answer is unusable: {exc}")
            return
        ringing = self._ringing.pop(row.id, None)
        if ringing is None or ringing.cancel.is_set():  # hung up as it was answered
            leg.hang_up()
            return
        point_rtp(rtp, negotiated)
        await self._services.calls_repo.mark_answered(row.id, utcnow())
        await self._runner.run(row, leg, rtp, negotiated)

    def _invite(self, row: CallRow, plan: SipDialPlan, here: LocalAddress, rtp: RtpSession) -> SipRequest:
        offer = build_offer(
            self._media.codecs, self._media.sdp_host, rtp.local_port, self._media.session_id()
        )
        headers = Headers()
        headers.add("Via", here.via())
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<{plan.from_}>;tag={new_tag()}")
        headers.add("To", f"<{plan.to}>")
        headers.add("Call-ID", new_call_id(here.host))
        headers.add("CSeq", "1 INVITE")
        headers.add("Contact", here.contact())
        headers.add("Allow", ALLOW)
        headers.add("User-Agent", "callbridge")
        for name, value in plan.headers.items():
            headers.add(name, value)
        headers.add("Content-Type", "application/sdp")
        return SipRequest("INVITE", plan.to, headers, offer)

    async def _ring(
        self, row: CallRow, invite: SipRequest, peer: Peer, plan: SipDialPlan
    ) -> tuple[SipRequest, SipResponse] | None:
        """The INVITE that got through and its 2xx (challenges answered); None when the call was not
        answered (recorded and ended here, or ended by whoever hung up)."""
        ringing = self._ringing[row.id]
        digest = (
            DigestClient(plan.username or plan.from_.user or "", plan.password) if plan.password else None
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ring_timeout_s
        request = invite
        for _ in range(MAX_CHALLENGES + 1):
            transaction = self._ua.transactions.request(request, peer)
            final = await self._until_final(row, transaction, ringing, deadline)
            if final is None:
                return None
            if final.status in (401, 407) and digest is not None:
                challenged = authorize(request, final, digest)
                if challenged is not None:
                    request = challenged
                    continue
            if final.status >= 300:
                await self._failed(row, final.status, final.reason)
                return None
            return request, final
        await self._failed(row, 401, "the credentials were refused")
        return None

    async def _until_final(
        self, row: CallRow, transaction: ClientTransaction, ringing: _Ringing, deadline: float
    ) -> SipResponse | None:
        provisional = asyncio.Event()
        responses = asyncio.ensure_future(self._final_after_ringing(row, transaction, provisional))
        cancelled = asyncio.ensure_future(ringing.cancel.wait())
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
        if ringing.cancel.is_set():
            return None  # the call was ended by whoever hung up
        await self._failed(row, final.status, f"nobody answered within {self._ring_timeout_s:g} s")
        return None

    async def _final_after_ringing(
        self, row: CallRow, transaction: ClientTransaction, provisional: asyncio.Event
    ) -> SipResponse:
        rang = False
        async for response in transaction.responses():
            if response.status >= 200:
                return response
            provisional.set()
            if response.status in (180, 183) and not rang:
                rang = True
                self._services.calls.events.record(
                    row.id,
                    row.created,
                    "ringing",
                    f"the callee is ringing ({response.status} {response.reason})",
                    extras={"code": response.status, "reason": response.reason},
                )
        raise AssertionError("a client transaction always ends with a final response")

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
