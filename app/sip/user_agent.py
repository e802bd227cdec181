"""callbridge's SIP user agent: the transports and transactions, and where each request goes.

Out-of-dialog requests go to the `RequestHandler` (INVITE: a new call; OPTIONS: answered here); requests
inside a dialog go to that dialog's `SipLeg`; a request for a dialog we do not know is answered 481. What
the far end may do is decided before anything is answered: the handler's `source_allowed` runs on the
packet's source address first, so a disallowed address gets its 403 and nothing else. Before even that, a
new out-of-dialog request over its source's rate limit (`rate_limiter`) is refused statelessly: 503 with
Retry-After to an allowed source, nothing at all to one that is not (a scanner's flood is dropped).
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from collections.abc import Coroutine
from typing import Any, Protocol

from app.metrics import SIP_REQUESTS_LIMITED
from app.sip.dialog import Dialog, LocalAddress
from app.sip.leg import ALLOW, SipLeg
from app.sip.message import (
    SipMessage,
    SipParseError,
    SipRequest,
    SipResponse,
    parse_name_addr,
    response_to,
)
from app.sip.rate_limit import SourceRateLimiter
from app.sip.transaction import LoopClock, ServerTransaction, TransactionLayer
from app.sip.transport import ListenAddress, Peer, SipTransports

log = logging.getLogger(__name__)

ACCEPT = "application/sdp, application/dtmf-relay"
#: On shutdown (after the drain ended the calls), how long their BYEs and CANCELs get to be answered.
STOP_GRACE_S = 2.0
SERVER = "callbridge"


class RequestHandler(Protocol):
    """What the service does with new requests (`app.sip.incoming.IncomingCalls`)."""

    def source_allowed(self, host: str) -> bool:
        """Whether requests from `host` are answered at all (ARCHITECTURE §3.1: checked first)."""
        ...

    async def invite(self, request: SipRequest, peer: Peer, transaction: ServerTransaction) -> None:
        """A new INVITE: answer it (the transaction's responses) and run the call."""
        ...


class SipUserAgent:
    """One per service: listens, answers, and sends requests for every SIP call."""

    def __init__(
        self, listens: list[ListenAddress], public_host: str, *, tls_server: ssl.SSLContext | None = None
    ) -> None:
        self._listens = listens
        self.public_host = public_host
        self.transports = SipTransports(self._on_message, self._on_bad_message, tls_server=tls_server)
        self.transactions = TransactionLayer(
            self.transports.send, LoopClock(), self._on_request, self._on_stray_response
        )
        self.handler: RequestHandler | None = None
        #: Per-source limits on new out-of-dialog requests (kinds "INVITE" and "request"); None: none.
        self.rate_limiter: SourceRateLimiter | None = None
        self._legs: dict[tuple[str, str, str], SipLeg] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._finishing: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        await self.transports.start(self._listens)
        for listen in self._listens:
            bound = self.transports.local(listen.transport)
            log.info("SIP listening on %s:%s:%d", bound.transport, bound.host, bound.port)

    async def stop(self) -> None:
        """Give the BYEs under way `STOP_GRACE_S` to be answered, then stop everything."""
        if self._finishing:
            await asyncio.wait(set(self._finishing), timeout=STOP_GRACE_S)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.transactions.close()
        await self.transports.stop()

    def here(self, transport: str, *, secure: bool = False) -> LocalAddress:
        """Our address over `transport`, as the far end should reach it (Via, Contact); `secure`: in a
        sips: dialog."""
        bound = self.transports.local(transport)
        return LocalAddress(transport, self.public_host, bound.port, secure)

    @property
    def transports_listening(self) -> set[str]:
        return {listen.transport for listen in self._listens}

    # --- dialogs ------------------------------------------------------------------------------

    def open_leg(self, dialog: Dialog, local_sdp: bytes) -> SipLeg:
        """The leg of a dialog just established; its requests reach it until it is over."""
        leg = SipLeg(dialog, self.transactions, self.transports, local_sdp, self.spawn_finishing)
        self._legs[dialog.key] = leg
        leg.on_over = self._leg_over
        if dialog.peer.reliable:
            self.transports.hold_open(dialog.peer, True)
        return leg

    def _leg_over(self, leg: SipLeg) -> None:
        # Kept a little longer would absorb a late retransmitted BYE; the transaction layer does that.
        if self._legs.pop(leg.dialog.key, None) is not None and leg.dialog.peer.reliable:
            self.transports.hold_open(leg.dialog.peer, False)

    def spawn(self, work: Coroutine[Any, Any, object], name: str) -> asyncio.Task[Any]:
        """Run `work` until it ends or the agent stops (its failure is logged, never raised)."""
        task = asyncio.create_task(self._guarded(work, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def spawn_finishing(self, work: Coroutine[Any, Any, object], name: str) -> None:
        """Like `spawn`, for signalling that ends a call (a BYE): a shutdown waits for it, briefly."""
        task = self.spawn(work, name)
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _guarded(self, work: Coroutine[Any, Any, object], name: str) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("SIP: %s failed", name)

    # --- incoming -----------------------------------------------------------------------------

    def _on_message(self, message: SipMessage, peer: Peer) -> None:
        if isinstance(message, SipRequest) and not self._within_rate(message, peer):
            return
        self.transactions.receive(message, peer)

    def _within_rate(self, request: SipRequest, peer: Peer) -> bool:
        """False (and refused here) for a new out-of-dialog request over its source's limit. ACK, CANCEL,
        requests in a dialog and retransmissions are never limited: they belong to what was let in."""
        limiter = self.rate_limiter
        if limiter is None or request.method in ("ACK", "CANCEL"):
            return True
        try:
            if request.to.tag or self.transactions.is_retransmission(request):
                return True
        except SipParseError:
            return True  # the transaction layer drops what it cannot match
        kind = "INVITE" if request.method == "INVITE" else "request"
        wait = limiter.take(kind, peer.host)
        if wait is None:
            return True
        handler = self.handler
        if handler is None or not handler.source_allowed(peer.host):
            SIP_REQUESTS_LIMITED.labels(kind, "dropped").inc()
            return False
        SIP_REQUESTS_LIMITED.labels(kind, "refused").inc()
        response = response_to(request, 503, "Service Unavailable (too many requests from this address)")
        response.headers.add("Retry-After", str(max(1, math.ceil(wait))))
        self.spawn(self.transports.send(response, peer), "sip-503")
        return False

    def _on_bad_message(self, data: bytes, peer: Peer, reason: str) -> None:
        """A malformed message: a 400 when the request can still be answered (RFC 3261 §8.2), from an
        allowed source only (a scanner's garbage gets nothing)."""
        log.info("SIP: malformed message from %s:%d: %s", peer.host, peer.port, reason)
        handler = self.handler
        if handler is not None and handler.source_allowed(peer.host):
            self.transports.answer_bad_request(data, peer, reason)

    def _on_stray_response(self, response: SipResponse, peer: Peer) -> None:
        """A 2xx retransmitted for an INVITE of ours gets our ACK again (its transaction is gone); a 2xx
        from a second callee of a forked INVITE (another To tag) is ACKed and then BYE'd (RFC 3261
        §13.2.2.4): the call already has its callee."""
        if 200 <= response.status < 300 and response.cseq[1] == "INVITE":
            ours = response.from_.tag or ""
            leg = self._legs.get((response.call_id, ours, response.to.tag or ""))
            if leg is not None:
                self.spawn(leg.resend_ack(), "sip-ack")
                return
            if any(key[:2] == (response.call_id, ours) for key in self._legs):
                self.spawn(self._end_forked(response, peer), "sip-forked")
                return
        log.debug("SIP: stray %d for %s from %s", response.status, response.headers.get("Call-ID"), peer)

    async def _end_forked(self, answer: SipResponse, peer: Peer) -> None:
        contact = answer.contact
        if contact is None:
            return
        dialog = Dialog(
            call_id=answer.call_id,
            local=answer.from_,
            remote=answer.to,
            remote_target=contact.uri,
            route_set=[parse_name_addr(v) for v in reversed(answer.headers.get_all("Record-Route"))],
            peer=peer,
            local_cseq=answer.cseq[0],
            here=self.here(peer.transport),
        )
        dialog.peer = dialog.next_hop(peer)
        await self.transports.send(dialog.ack(), dialog.peer)
        await self.transactions.request(dialog.request("BYE"), dialog.peer).final()

    def _on_request(self, request: SipRequest, peer: Peer, transaction: ServerTransaction | None) -> None:
        handler = self.handler
        if handler is None or not handler.source_allowed(peer.host):
            if transaction is not None:  # in a dialog or not: a disallowed address gets 403, nothing else
                self.spawn(transaction.respond(response_to(request, 403)), "sip-403")
            return
        if request.to.tag:
            self.spawn(self._in_dialog(request, peer, transaction), f"sip-{request.method}")
            return
        if transaction is None:  # an ACK outside any dialog: nothing to do
            return
        self.spawn(self._out_of_dialog(request, peer, transaction), f"sip-{request.method}")

    async def _in_dialog(
        self, request: SipRequest, peer: Peer, transaction: ServerTransaction | None
    ) -> None:
        key = (request.call_id, request.to.tag or "", request.from_.tag or "")
        leg = self._legs.get(key)
        if leg is not None:
            await leg.on_request(request, transaction)
        elif transaction is not None:
            await transaction.respond(response_to(request, 481))

    async def _out_of_dialog(self, request: SipRequest, peer: Peer, transaction: ServerTransaction) -> None:
        handler = self.handler
        method = request.method
        if method == "INVITE" and handler is not None:
            await handler.invite(request, peer, transaction)
        elif method == "OPTIONS":
            await transaction.respond(self.options_answer(request))
        elif method in ("BYE", "INFO", "UPDATE", "PRACK", "NOTIFY"):
            await transaction.respond(response_to(request, 481))
        else:
            response = response_to(request, 405 if method in ("REGISTER", "SUBSCRIBE", "PUBLISH") else 501)
            response.headers.add("Allow", ALLOW)
            await transaction.respond(response)

    def options_answer(self, request: SipRequest) -> SipResponse:
        response = response_to(request, 200)
        response.headers.add("Allow", ALLOW)
        response.headers.add("Accept", ACCEPT)
        response.headers.add("Server", SERVER)
        return response
