"""A minimal SIP phone for the simulator: one call at a time, as caller or callee, on app.sip's transports,
transactions and dialogs. It places an INVITE (ACKing the 2xx, again for each retransmission), or answers
one (180, then 200 with our SDP), answers the far end's BYE, and sends its own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from app.sip.dialog import Dialog, LocalAddress, peer_for_uri
from app.sip.message import (
    Headers,
    NameAddr,
    SipMessage,
    SipRequest,
    SipResponse,
    SipUri,
    new_call_id,
    new_tag,
    response_to,
)
from app.sip.transaction import LoopClock, ServerTransaction, TransactionLayer
from app.sip.transport import ListenAddress, Peer, SipTransports

PHONE_USER = "simulator"
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS"
#: How long the phone waits for the first response before it says nobody answers (UDP gives no error).
FIRST_RESPONSE_S = 5.0
RING_TIMEOUT_S = 30.0
BYE_TIMEOUT_S = 5.0


class NoAnswer(Exception):
    """Nothing answered the INVITE (nobody listening there), or it rang too long."""


@dataclass(frozen=True)
class Invite:
    """An INVITE that reached the phone."""

    request: SipRequest
    peer: Peer
    transaction: ServerTransaction


def build_invite(
    target: SipUri, from_: NameAddr, here: LocalAddress, headers: list[tuple[str, str]], offer: bytes
) -> SipRequest:
    """A new out-of-dialog INVITE to `target` carrying the SDP `offer` and the extra `headers`."""
    h = Headers()
    h.add("Via", here.via())
    h.add("Max-Forwards", "70")
    h.add("From", str(from_.with_tag(new_tag())))
    h.add("To", str(NameAddr(target)))
    h.add("Call-ID", new_call_id(here.host))
    h.add("CSeq", "1 INVITE")
    h.add("Contact", here.contact(PHONE_USER))
    h.add("Allow", ALLOW)
    for name, value in headers:
        h.add(name, value)
    h.add("Content-Type", "application/sdp")
    return SipRequest("INVITE", target, h, offer)


def status_line(response: SipResponse) -> str:
    return f"{response.status} {response.reason}"


class SipPhone:
    """One UA endpoint bound to `host:port` over one transport."""

    def __init__(self, transport: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self._listen = ListenAddress(transport, host, port)
        self.transports = SipTransports(self._on_message)
        self.transactions = TransactionLayer(
            self.transports.send, LoopClock(), self._on_request, self._on_stray_response
        )
        self.dialog: Dialog | None = None
        self.local_sdp = b""
        #: Set when the far end ends the call (BYE, or CANCEL while we ring).
        self.hung_up = asyncio.Event()
        self._ack: SipRequest | None = None
        self._invites: asyncio.Queue[Invite] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Bind the socket (OSError when the address is taken)."""
        await self.transports.start([self._listen])

    @property
    def here(self) -> LocalAddress:
        bound = self.transports.local(self._listen.transport)
        return LocalAddress(bound.transport, bound.host, bound.port)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.transactions.close()
        await self.transports.stop()

    # --- as the caller ----------------------------------------------------------------------------

    async def call(
        self, invite: SipRequest, on_provisional: Callable[[SipResponse], None] | None = None
    ) -> SipResponse:
        """Send `invite` and return its final response; a 2xx is ACKed and opens `dialog`.

        NoAnswer when no response came within FIRST_RESPONSE_S, or no final one within RING_TIMEOUT_S
        (then the INVITE is CANCELled).
        """
        peer = peer_for_uri(invite.uri)
        transaction = self.transactions.request(invite, peer)
        responses = transaction.responses()
        first = True
        try:
            async with asyncio.timeout(RING_TIMEOUT_S):
                while True:
                    wait = FIRST_RESPONSE_S if first else None
                    try:
                        response = await asyncio.wait_for(anext(responses), wait)
                    except TimeoutError:
                        raise NoAnswer(
                            f"nothing answered at {peer.transport}:{peer.host}:{peer.port}"
                        ) from None
                    first = False
                    if response.status >= 200:
                        break
                    if on_provisional is not None:
                        on_provisional(response)
        except TimeoutError:
            self.transactions.request(transaction.cancel_request(), peer)
            raise NoAnswer(f"no final answer within {RING_TIMEOUT_S:.0f} s (CANCELled)") from None
        if 200 <= response.status < 300:
            self.dialog = Dialog.as_uac(invite, response, peer, self.here)
            self.dialog.peer = self.dialog.next_hop(peer)
            self._ack = self.dialog.ack()
            await self.transports.send(self._ack, self.dialog.peer)
        return response

    # --- as the callee ----------------------------------------------------------------------------

    async def next_invite(self) -> Invite:
        """The next new INVITE."""
        return await self._invites.get()

    async def answer(self, invite: Invite, sdp: bytes) -> bool:
        """Ring (180), then accept with `sdp` (200); True once the ACK came, False without one."""
        tag = new_tag()
        request = invite.request
        await invite.transaction.respond(response_to(request, 180, to_tag=tag))
        ok = response_to(request, 200, to_tag=tag)
        ok.headers.add("Contact", self.here.contact(PHONE_USER))
        ok.headers.add("Allow", ALLOW)
        ok.headers.add("Content-Type", "application/sdp")
        ok.body = sdp
        self.local_sdp = sdp
        self.dialog = Dialog.as_uas(request, tag, invite.peer, self.here)
        self.dialog.peer = self.dialog.next_hop(invite.peer)
        await invite.transaction.respond(ok)
        return await invite.transaction.acked

    # --- either side ------------------------------------------------------------------------------

    async def hang_up(self) -> SipResponse | None:
        """Send BYE and return its answer (None when none came within BYE_TIMEOUT_S)."""
        if self.dialog is None:
            return None
        bye = self.transactions.request(self.dialog.request("BYE"), self.dialog.peer)
        try:
            async with asyncio.timeout(BYE_TIMEOUT_S):
                return await bye.final()
        except TimeoutError:
            return None

    # --- what arrives -------------------------------------------------------------------------------

    def _on_message(self, message: SipMessage, peer: Peer) -> None:
        self.transactions.receive(message, peer)

    def _on_stray_response(self, response: SipResponse, peer: Peer) -> None:
        """A retransmitted 2xx to our INVITE: its ACK was lost, send it again."""
        if self._ack is not None and self.dialog is not None and response.cseq[1] == "INVITE":
            self._spawn(self.transports.send(self._ack, self.dialog.peer))

    def _on_request(self, request: SipRequest, peer: Peer, transaction: ServerTransaction | None) -> None:
        if transaction is None:  # an ACK: the transaction layer already matched the 2xx it confirms
            return
        if transaction.invite and not request.to.tag:
            if self.dialog is None:
                self._invites.put_nowait(Invite(request, peer, transaction))
                self._spawn(self._hang_up_on_cancel(transaction))
            else:
                self._spawn(transaction.respond(response_to(request, 486)))
            return
        self._spawn(transaction.respond(self._in_dialog(request)))

    def _in_dialog(self, request: SipRequest) -> SipResponse:
        dialog = self.dialog
        if request.method == "OPTIONS":
            return response_to(request, 200)
        if dialog is None or request.call_id != dialog.call_id or request.to.tag != dialog.local.tag:
            return response_to(request, 481)
        if request.method == "BYE":
            self.hung_up.set()
        response = response_to(request, 200)
        if request.method == "INVITE":  # a re-INVITE (session refresh, re-anchoring): keep our media
            response.headers.add("Contact", self.here.contact(PHONE_USER))
            response.headers.add("Content-Type", "application/sdp")
            response.body = self.local_sdp
        return response

    async def _hang_up_on_cancel(self, transaction: ServerTransaction) -> None:
        await transaction.cancel_received.wait()
        self.hung_up.set()
        with contextlib.suppress(Exception):
            await transaction.respond(response_to(transaction.request, 487))

    def _spawn(self, work: Coroutine[Any, Any, object]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
