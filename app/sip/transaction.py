"""SIP transactions (RFC 3261 §17, RFC 6026 Accepted state): retransmissions, timeouts, matching.

Client transactions retransmit over UDP and time out; server transactions absorb retransmitted requests
by resending the last response, send 100 Trying for a slow INVITE, retransmit the final INVITE response
until its ACK, and answer CANCEL. Every timer runs on an injectable `Clock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from app.sip.message import Headers, SipMessage, SipParseError, SipRequest, SipResponse, response_to
from app.sip.transport import DEFAULT_PORTS, Peer

log = logging.getLogger(__name__)

T1 = 0.5
T2 = 4.0
T4 = 5.0
MAGIC_COOKIE = "z9hG4bK"


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle: ...


class LoopClock:
    """The running asyncio loop's clock."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(delay, callback)


@dataclass(frozen=True)
class Timers:
    """RFC 3261 timer base values (Table 4); tests may shrink them."""

    t1: float = T1
    t2: float = T2
    t4: float = T4
    timer_d: float = 32.0  # client INVITE Completed wait, UDP
    trying_after: float = 0.2  # a server INVITE sends 100 Trying when the TU is silent this long

    @property
    def timeout(self) -> float:  # Timers B, F, H, J, L, M
        return 64 * self.t1


class State(enum.Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


_ANSWERED = (State.PROCEEDING, State.ACCEPTED, State.COMPLETED)

SendFunction = Callable[[SipMessage, Peer], Awaitable[None]]
RequestHandler = Callable[[SipRequest, Peer, "ServerTransaction | None"], None]
StrayHandler = Callable[[SipResponse, Peer], None]
ClientKey = tuple[str, str]
ServerKey = tuple[str, ...]


class TransactionLayer:
    """Matches messages to transactions (RFC 3261 §17.1.3, §17.2.3) and owns their timers."""

    def __init__(
        self,
        send: SendFunction,
        clock: Clock,
        on_request: RequestHandler,
        on_stray_response: StrayHandler,
        *,
        timers: Timers | None = None,
    ) -> None:
        self._send = send
        self.clock = clock
        self.timers = timers or Timers()
        self._on_request = on_request
        self._on_stray_response = on_stray_response
        self._clients: dict[ClientKey, ClientTransaction] = {}
        self._servers: dict[ServerKey, ServerTransaction] = {}
        self._accepted: dict[tuple[str, int], ServerTransaction] = {}
        self._sending: set[asyncio.Future[None]] = set()

    def request(self, request: SipRequest, peer: Peer) -> ClientTransaction:
        """Send `request` (its top Via carries the branch) in a new client transaction."""
        if request.method == "ACK":
            raise ValueError("an ACK for a 2xx is sent without a transaction (transport send)")
        transaction = ClientTransaction(self, request, peer)
        self._clients[transaction.key] = transaction
        if request.method == "CANCEL":
            invite = self._clients.get((transaction.key[0], "INVITE"))
            if invite is not None:
                invite._cancel_sent()
        transaction._start()
        return transaction

    def receive(self, message: SipMessage, peer: Peer) -> None:
        """Take one message from the transport."""
        try:
            if isinstance(message, SipResponse):
                self._receive_response(message, peer)
            else:
                self._receive_request(message, peer)
        except SipParseError as exc:
            log.info("dropping a SIP message from %s the transaction layer cannot match: %s", peer, exc)

    def is_retransmission(self, request: SipRequest) -> bool:
        """Whether `request` matches a server transaction under way (SipParseError when it cannot match)."""
        return server_key(request) in self._servers

    def close(self) -> None:
        """Stop every transaction; client transactions still waiting end with a 503."""
        for client in list(self._clients.values()):
            client._fail(503, "Transaction Layer Closed")
        for server in list(self._servers.values()):
            server._terminate()

    # --- matching --------------------------------------------------------------------------------

    def _receive_response(self, response: SipResponse, peer: Peer) -> None:
        branch = response.top_via.branch or ""
        transaction = self._clients.get((branch, response.cseq[1]))
        if transaction is None:
            self._deliver_stray(response, peer)
        else:
            transaction._on_response(response)

    def _receive_request(self, request: SipRequest, peer: Peer) -> None:
        key = server_key(request)
        if request.method == "ACK":
            self._receive_ack(request, peer, key)
            return
        existing = self._servers.get(key)
        if existing is not None:
            existing._on_retransmission()
            return
        transaction = ServerTransaction(self, request, peer, key)
        self._servers[key] = transaction
        if request.method == "CANCEL":
            self._receive_cancel(transaction)
            return
        transaction._start()
        try:
            self._on_request(request, peer, transaction)
        except Exception:
            log.exception("SIP request handler failed for %s", request.method)

    def _receive_ack(self, ack: SipRequest, peer: Peer, key: ServerKey) -> None:
        transaction = self._servers.get(key)
        if transaction is not None and transaction.state in (State.COMPLETED, State.CONFIRMED):
            transaction._on_ack()  # ACK for a non-2xx: part of the transaction, absorbed
            return
        accepted = self._accepted.get((ack.call_id, ack.cseq[0]))
        if accepted is not None:
            accepted._on_ack()
        try:
            self._on_request(ack, peer, None)
        except Exception:
            log.exception("SIP request handler failed for ACK")

    def _receive_cancel(self, cancel: ServerTransaction) -> None:
        invite = self._servers.get((*cancel.key[:-1], "INVITE"))
        if invite is None:
            cancel._reply(response_to(cancel.request, 481, "Call/Transaction Does Not Exist"))
            return
        cancel._reply(response_to(cancel.request, 200, to_tag=invite._to_tag()))
        invite._on_cancel(cancel.request)

    def _deliver_stray(self, response: SipResponse, peer: Peer) -> None:
        try:
            self._on_stray_response(response, peer)
        except Exception:
            log.exception("SIP stray-response handler failed")

    # --- plumbing for the transactions -----------------------------------------------------------

    def _transmit(self, message: SipMessage, peer: Peer, on_error: Callable[[Exception], None]) -> None:
        """Hand a message to the transport now; a failure is reported to `on_error` later."""
        sending = asyncio.ensure_future(self._send(message, peer))
        self._sending.add(sending)
        sending.add_done_callback(lambda done: self._sent(done, on_error))

    def _sent(self, done: asyncio.Future[None], on_error: Callable[[Exception], None]) -> None:
        self._sending.discard(done)
        if done.cancelled():
            return
        exc = done.exception()
        if exc is not None:
            on_error(exc)

    def _forget_client(self, transaction: ClientTransaction) -> None:
        if self._clients.get(transaction.key) is transaction:
            del self._clients[transaction.key]

    def _forget_server(self, transaction: ServerTransaction) -> None:
        if self._servers.get(transaction.key) is transaction:
            del self._servers[transaction.key]
        if self._accepted.get(transaction.accepted_key) is transaction:
            del self._accepted[transaction.accepted_key]


def server_key(request: SipRequest) -> ServerKey:
    """RFC 3261 §17.2.3: branch + sent-by + method (an ACK matches its INVITE); RFC 2543 fallback."""
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    sent_by = f"{via.host.lower()}:{via.port or DEFAULT_PORTS.get(via.transport.lower(), 5060)}"
    branch = via.branch or ""
    if branch.startswith(MAGIC_COOKIE):
        return (branch, sent_by, method)
    # RFC 2543 peers: no usable branch; the To tag is left out because an ACK adds one.
    return ("", request.call_id, str(request.cseq[0]), request.from_.tag or "", sent_by, method)


class _Timer:
    """One named, restartable timer of a transaction."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._handle: TimerHandle | None = None

    def start(self, delay: float, callback: Callable[[], None]) -> None:
        self.stop()
        self._handle = self._clock.call_later(delay, callback)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class ClientTransaction:
    """An INVITE or non-INVITE client transaction (RFC 3261 §17.1)."""

    def __init__(self, layer: TransactionLayer, request: SipRequest, peer: Peer) -> None:
        self.request = request
        self.peer = peer
        self.invite = request.method == "INVITE"
        self.key: ClientKey = (request.top_via.branch or "", request.method)
        self.state = State.CALLING if self.invite else State.TRYING
        self._layer = layer
        self._timers = layer.timers
        self._retransmit = _Timer(layer.clock)  # A or E
        self._timeout = _Timer(layer.clock)  # B or F, and the 64*T1 wait after a CANCEL
        self._linger = _Timer(layer.clock)  # D or K
        self._interval = self._timers.t1
        self._ack: SipRequest | None = None
        loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[SipResponse] = asyncio.Queue()
        self._final: asyncio.Future[SipResponse] = loop.create_future()

    async def responses(self) -> AsyncIterator[SipResponse]:
        """Every response passed up: provisional ones, then the final one (then it stops)."""
        while True:
            response = await self._queue.get()
            yield response
            if response.status >= 200:
                return

    async def final(self) -> SipResponse:
        """The final response (a synthesized 408 on timeout, 503 on a transport failure)."""
        return await asyncio.shield(self._final)

    @property
    def final_response(self) -> SipResponse | None:
        return self._final.result() if self._final.done() else None

    def cancel_request(self) -> SipRequest:
        """The CANCEL for this INVITE (RFC 3261 §9.1); send it with `TransactionLayer.request`."""
        headers = Headers()
        headers.add("Via", self.request.headers.get_all("Via")[0])
        for name in ("Route",):
            for value in self.request.headers.get_all(name):
                headers.add(name, value)
        for name in ("Max-Forwards", "From", "To", "Call-ID"):
            value = self.request.headers.get(name)
            if value is not None:
                headers.add(name, value)
        headers.add("CSeq", f"{self.request.cseq[0]} CANCEL")
        return SipRequest("CANCEL", self.request.uri, headers)

    # --- state machine ---------------------------------------------------------------------------

    def _start(self) -> None:
        self._send(self.request)
        if not self.peer.reliable:
            self._retransmit.start(self._interval, self._on_retransmit_timer)
        self._timeout.start(self._timers.timeout, self._on_timeout)

    def _on_retransmit_timer(self) -> None:
        if self.state not in (State.CALLING, State.TRYING, State.PROCEEDING):
            return
        self._send(self.request)
        if self.invite:
            self._interval *= 2  # Timer A doubles without a cap
        elif self.state is State.PROCEEDING:
            self._interval = self._timers.t2
        else:
            self._interval = min(2 * self._interval, self._timers.t2)
        self._retransmit.start(self._interval, self._on_retransmit_timer)

    def _on_timeout(self) -> None:
        if self.state in (State.CALLING, State.TRYING, State.PROCEEDING):
            self._fail(408, "Request Timeout")

    def _cancel_sent(self) -> None:
        # RFC 3261 §9.1: without a final response 64*T1 after the CANCEL, the INVITE is given up.
        if self.state is State.PROCEEDING:
            self._timeout.start(self._timers.timeout, self._on_timeout)

    def _on_response(self, response: SipResponse) -> None:
        if self.state is State.COMPLETED:
            if self._ack is not None:  # a retransmitted non-2xx final: ACK it again
                self._send(self._ack)
            return
        if self.state is State.TERMINATED:
            self._layer._deliver_stray(response, self.peer)
            return
        if response.status < 200:
            if self.state in (State.CALLING, State.TRYING):
                self.state = State.PROCEEDING
                if self.invite:
                    self._retransmit.stop()
                    self._timeout.stop()  # Timer B only runs in Calling
            self._queue.put_nowait(response)
            return
        self._retransmit.stop()
        self._timeout.stop()
        self._queue.put_nowait(response)
        self._final.set_result(response)
        if self.invite and response.status < 300:
            # RFC 6026 Accepted: later 2xx (retransmissions, forks) reach on_stray_response, the UA ACKs them.
            self._terminate()
            return
        if self.invite:
            self._ack = self._build_ack(response)
            self._send(self._ack)
        self.state = State.COMPLETED
        if self.peer.reliable:
            self._terminate()
        else:
            self._linger.start(self._timers.timer_d if self.invite else self._timers.t4, self._terminate)

    def _build_ack(self, response: SipResponse) -> SipRequest:
        """RFC 3261 §17.1.1.3: the ACK for a non-2xx final, same branch as the INVITE."""
        headers = Headers()
        headers.add("Via", self.request.headers.get_all("Via")[0])
        for value in self.request.headers.get_all("Route"):
            headers.add("Route", value)
        for name in ("Max-Forwards", "From", "Call-ID"):
            value = self.request.headers.get(name)
            if value is not None:
                headers.add(name, value)
        headers.add("To", response.headers.get("To") or self.request.headers.get("To") or "")
        headers.add("CSeq", f"{self.request.cseq[0]} ACK")
        return SipRequest("ACK", self.request.uri, headers)

    def _fail(self, status: int, reason: str) -> None:
        if self.state in (State.COMPLETED, State.TERMINATED):
            self._terminate()
            return
        response = response_to(self.request, status, reason)
        self._queue.put_nowait(response)
        self._final.set_result(response)
        self._terminate()

    def _terminate(self) -> None:
        self.state = State.TERMINATED
        for timer in (self._retransmit, self._timeout, self._linger):
            timer.stop()
        self._layer._forget_client(self)

    def _send(self, message: SipMessage) -> None:
        self._layer._transmit(message, self.peer, self._on_transport_error)

    def _on_transport_error(self, exc: Exception) -> None:
        log.info("%s to %s: transport failure: %s", self.request.method, self.peer, exc)
        # The synthesized 503 says why (a refused TLS certificate, a refused connection): the caller's
        # sip_status event shows it.
        self._fail(503, f"Service Unavailable ({' '.join(str(exc).split())[:200]})")


class ServerTransaction:
    """An INVITE or non-INVITE server transaction (RFC 3261 §17.2, RFC 6026)."""

    def __init__(self, layer: TransactionLayer, request: SipRequest, peer: Peer, key: ServerKey) -> None:
        self.request = request
        self.peer = peer
        self.key = key
        self.invite = request.method == "INVITE"
        self.accepted_key = (request.call_id, request.cseq[0])  # how the ACK for a 2xx finds it
        self.state = State.PROCEEDING if self.invite else State.TRYING
        self.last_response: SipResponse | None = None
        self.cancelled = False
        self.cancel_request: SipRequest | None = None
        self.cancel_received = asyncio.Event()
        #: INVITE only: True when the ACK for the final response came, False when none came in 64*T1.
        self.acked: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._layer = layer
        self._timers = layer.timers
        self._trying = _Timer(layer.clock)
        self._retransmit = _Timer(layer.clock)  # G, or the 2xx retransmission in Accepted
        self._timeout = _Timer(layer.clock)  # H or L
        self._linger = _Timer(layer.clock)  # I or J
        self._interval = self._timers.t1

    async def respond(self, response: SipResponse) -> None:
        """Send a response; raises the transport's error if this first send fails."""
        if not self._take(response):
            return
        await self._layer._send(response, self.peer)

    # --- state machine ---------------------------------------------------------------------------

    def _start(self) -> None:
        if self.invite:
            self._trying.start(self._timers.trying_after, self._send_trying)

    def _send_trying(self) -> None:
        if self.last_response is None and self.state is State.PROCEEDING:
            self._reply(response_to(self.request, 100, "Trying"))

    def _reply(self, response: SipResponse) -> None:
        """Send a response the layer generated itself (100 Trying, the answer to a CANCEL)."""
        if self._take(response):
            self._layer._transmit(response, self.peer, self._on_transport_error)

    def _take(self, response: SipResponse) -> bool:
        """Move the state machine for an outgoing response; False when it must not be sent."""
        if self.state is State.ACCEPTED and 200 <= response.status < 300:
            self.last_response = response  # RFC 6026: further 2xx from the TU go out too
            return True
        if self.state not in (State.TRYING, State.PROCEEDING):
            log.info(
                "not sending %d for %s: transaction %s",
                response.status,
                self.request.method,
                self.state.value,
            )
            return False
        self._trying.stop()
        self.last_response = response
        if response.status < 200:
            self.state = State.PROCEEDING
            return True
        timers, unreliable = self._timers, not self.peer.reliable
        if not self.invite:
            self.state = State.COMPLETED
            self._linger_then_terminate(timers.timeout if unreliable else 0.0)
        elif response.status < 300:
            self.state = State.ACCEPTED
            self._layer._accepted[self.accepted_key] = self
            self._timeout.start(timers.timeout, self._on_no_ack)  # Timer L
        else:
            self.state = State.COMPLETED
            self._timeout.start(timers.timeout, self._on_no_ack)  # Timer H
        if self.invite and unreliable:
            self._retransmit.start(self._interval, self._on_retransmit_timer)  # Timer G, or 2xx resend
        return True

    def _on_retransmit_timer(self) -> None:
        if self.state not in (State.ACCEPTED, State.COMPLETED) or self.last_response is None:
            return
        self._resend()
        self._interval = min(2 * self._interval, self._timers.t2)
        self._retransmit.start(self._interval, self._on_retransmit_timer)

    def _on_retransmission(self) -> None:
        if self.last_response is None or self.state not in (
            State.PROCEEDING,
            State.ACCEPTED,
            State.COMPLETED,
        ):
            return
        if self.state is State.ACCEPTED and self.acked.done():
            return
        self._resend()

    def _on_ack(self) -> None:
        if self.state not in (State.ACCEPTED, State.COMPLETED):
            return
        self._retransmit.stop()
        if not self.acked.done():
            self.acked.set_result(True)
        if self.state is State.ACCEPTED:
            # Stays until Timer L (still running: it ends the transaction), absorbing late INVITE
            # retransmissions (RFC 6026 §8.7).
            return
        self._timeout.stop()
        self.state = State.CONFIRMED
        self._linger_then_terminate(0.0 if self.peer.reliable else self._timers.t4)  # Timer I

    def _on_no_ack(self) -> None:
        if not self.acked.done():
            log.info("no ACK for %s %d from %s", self.request.method, self._status(), self.peer)
        self._terminate()

    def _on_cancel(self, cancel: SipRequest) -> None:
        if self.state is not State.PROCEEDING or self.cancelled:
            return
        self.cancelled = True
        self.cancel_request = cancel
        self.cancel_received.set()

    def _to_tag(self) -> str | None:
        if self.last_response is None:
            return None
        with contextlib.suppress(SipParseError):
            return self.last_response.to.tag
        return None

    def _status(self) -> int:
        return self.last_response.status if self.last_response is not None else 0

    def _resend(self) -> None:
        assert self.last_response is not None
        self._layer._transmit(self.last_response, self.peer, self._on_transport_error)

    def _linger_then_terminate(self, delay: float) -> None:
        if delay <= 0:
            self._terminate()
        else:
            self._linger.start(delay, self._terminate)

    def _terminate(self) -> None:
        self.state = State.TERMINATED
        for timer in (self._trying, self._retransmit, self._timeout, self._linger):
            timer.stop()
        if self.invite and not self.acked.done():
            self.acked.set_result(False)
        self._layer._forget_server(self)

    def _on_transport_error(self, exc: Exception) -> None:
        log.info("response to %s from %s: transport failure: %s", self.request.method, self.peer, exc)
