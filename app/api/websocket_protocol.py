"""uvicorn's WebSocket protocol with a direct message path for the media streams.

uvicorn's own protocol turns every message into an ASGI dict on a queue, and every send into one, through
websockets' generator-based frame parser and serializer: at two messages per call every 20 ms that was
most of the server's CPU per call. Here the HTTP upgrade, routing and the ASGI messages of the handshake
and of closing stay uvicorn's; a route that asks for the direct path before it accepts (through the scope's
DIRECT_MESSAGES extension) then receives whole messages from `FrameParser` and sends each as one write.
Routes that do not ask keep uvicorn's behaviour unchanged.
"""

from __future__ import annotations

import asyncio
from functools import partial
from types import SimpleNamespace
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from app.api.websocket_frames import (
    MESSAGE_TOO_BIG,
    FrameParser,
    FrameViolation,
    Opcode,
    close_status,
    encode_close,
    encode_frame,
)
from app.calls.transport import MessageTooLarge, TransportClosed
from app.handoff import HandleNow, Handoff

#: The ASGI scope extension under which a connection offers its direct path.
DIRECT_MESSAGES = "callbridge.direct_messages"
#: Whole messages waiting for the route beyond this pause reading from the socket (TCP pushes back).
INBOX_HIGH_WATER = 64
_TEXT, _BINARY, _PING, _PONG = Opcode.TEXT, Opcode.BINARY, Opcode.PING, Opcode.PONG
#: Code reported when the connection dropped without a close frame (RFC 6455 §7.1.5).
ABNORMAL_CLOSURE = 1006


class DirectMessagesProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, plus a direct path: `use_direct`, `receive_message`,
    `send_message`. Needs `ws_per_message_deflate=False` (the direct frames carry no extension)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if config.ws_per_message_deflate:
            raise ValueError("DirectMessagesProtocol needs ws_per_message_deflate=False")
        super().__init__(config, server_state, app_state, _loop)
        self._wants_direct = False
        self._direct = False
        self._parser = FrameParser(config.ws_max_size)
        #: Whole messages for the route, or what its `handle_messages_now` handler made of them.
        self._inbox: Handoff[object] = Handoff()
        self._closed_with: int | None = None
        self._max_message_bytes = config.ws_max_size

    # --- the route's side --------------------------------------------------------------------

    def use_direct(self, max_message_bytes: int | None = None) -> None:
        """Switch to the direct path when the handshake is accepted (call before accepting). A message over
        `max_message_bytes` (this route's limit; the server's `ws_max_size` caps it) closes with 1009."""
        self._wants_direct = True
        if max_message_bytes is not None and max_message_bytes < self._max_message_bytes:
            self._max_message_bytes = max_message_bytes
            self._parser = FrameParser(max_message_bytes)

    def handle_messages_now(self, handler: HandleNow[object] | None) -> None:
        """Give each message to `handler` in `data_received` while the route waits in `receive_message`
        with nothing queued (no task wake-up); what it returns instead of None is queued for the route."""
        self._inbox.handle_now(handler)

    async def receive_message(self) -> Any:
        """The next whole message (or what the `handle_messages_now` handler queued). Raises
        MessageTooLarge after a message over the limit, TransportClosed once the connection is closed
        otherwise."""
        message = await self._inbox.get()
        if self.read_paused and len(self._inbox) < INBOX_HIGH_WATER // 2:
            self.read_paused = False
            self.transport.resume_reading()
        return message

    async def send_message(self, message: str | bytes) -> None:
        """Send one whole message (text for `str`); raises TransportClosed once the connection is closed."""
        if not self.writable.is_set():
            await self.writable.wait()
        if not self._write(message):
            raise TransportClosed(f"closed with code {self._closed_with or ABNORMAL_CLOSURE}")

    def send_message_now(self, message: str | bytes) -> bool:
        """Write one whole message at once if the connection takes it now; False (nothing written) when
        writing is paused or the connection is closed, where `send_message` waits or raises."""
        return self.writable.is_set() and self._write(message)

    def _write(self, message: str | bytes) -> bool:
        closed = self.close_sent or self.disconnected or self._closed_with is not None
        if closed or self.transport.is_closing():
            return False
        if type(message) is str:
            self.transport.write(encode_frame(_TEXT, message.encode()))
        else:
            self.transport.write(encode_frame(_BINARY, message))  # type: ignore[arg-type]
        return True

    # --- uvicorn's side ----------------------------------------------------------------------

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][DIRECT_MESSAGES] = self

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self._wants_direct and not self._direct and self.handshake_complete and not self.close_sent:
            # The 101 is written: a client sends no frame before it, so websockets' parser holds none.
            self._direct = message["type"] == "websocket.accept"
        if message["type"] == "websocket.close" and self._direct:
            self._closed(message.get("code", 1000))

    def data_received(self, data: bytes) -> None:
        if not self._direct:
            super().data_received(data)
            return
        try:
            received = self._parser.feed(data)
        except FrameViolation as violation:
            self._fail(violation.code, violation.reason)
            return
        for opcode, payload in received:
            if opcode is _TEXT or opcode is _BINARY:
                self._deliver(payload)
            elif opcode is _PING:
                self.transport.write(encode_frame(Opcode.PONG, bytes(payload)))  # type: ignore[arg-type]
            elif opcode is _PONG:
                self.handle_pong(SimpleNamespace(data=payload))  # type: ignore[arg-type]
            else:
                self._peer_closed(bytes(payload))  # type: ignore[arg-type]
                return

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._closed(ABNORMAL_CLOSURE)
        scope = getattr(self, "scope", None)
        if scope is not None:  # the scope refers to this protocol: a cycle, once nothing can use it
            scope["extensions"].pop(DIRECT_MESSAGES, None)

    def shutdown(self) -> None:
        super().shutdown()
        if self._direct:
            self._closed(1012)

    # --- internals ---------------------------------------------------------------------------

    def _deliver(self, message: str | bytes) -> None:
        if self.close_sent or self._closed_with is not None:
            return  # past our close: read on only until the peer's close arrives
        self._inbox.put(message)
        if not self.read_paused and len(self._inbox) >= INBOX_HIGH_WATER:
            self.read_paused = True
            self.transport.pause_reading()

    def _peer_closed(self, payload: bytes) -> None:
        if self.close_sent:  # the peer answered our close: the closing handshake is complete
            if self.close_timer is not None:
                self.close_timer.cancel()
                self.close_timer = None
            self.transport.close()
            return
        try:
            code, reason = close_status(payload)
        except FrameViolation as violation:
            self._fail(violation.code, violation.reason)
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.transport.write(encode_close(code))
        self.transport.close()
        self._closed(code)

    def _fail(self, code: int, reason: str) -> None:
        self.logger.info("WebSocket %s closed: %s", self.client, reason)
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        if not self.transport.is_closing():
            self.transport.write(encode_close(code, reason))
        self.close_sent = True
        self.transport.close()
        self._closed(code)

    def _closed(self, code: int) -> None:
        if self._closed_with is None:
            self._closed_with = code
            # Nothing refers back to this protocol from its inbox now (a bound method would: a cycle that
            # keeps the whole call for the cycle collector's next full pass).
            self._inbox.handle_now(None)
            self._inbox.end(partial(closed_error, code, self._max_message_bytes))


def closed_error(code: int, max_message_bytes: int) -> TransportClosed:
    """What receiving raises once a connection closed with `code`."""
    if code == MESSAGE_TOO_BIG:
        limit = max_message_bytes
        return MessageTooLarge(f"the far end sent a message over this stream's {limit}-byte limit")
    return TransportClosed(f"closed with code {code}")
