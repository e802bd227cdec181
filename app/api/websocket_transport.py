"""Whole messages over a Starlette WebSocket: the socket under a call's `FramedStream`."""

from __future__ import annotations

import asyncio
import contextlib

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from app.calls.transport import TransportClosed


class WebSocketMessages:
    """A `MessageSocket` on a Starlette WebSocket (a provider's media stream or a serverWebSocket client)."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self._send_lock = asyncio.Lock()

    async def receive(self) -> str | bytes:
        try:
            message = await self.websocket.receive()
        except RuntimeError as exc:  # receiving after a disconnect
            raise TransportClosed(str(exc)) from None
        if message["type"] == "websocket.disconnect":
            raise TransportClosed(f"closed with code {message.get('code')}")
        text = message.get("text")
        return text if text is not None else message.get("bytes") or b""

    async def send(self, message: str | bytes) -> None:
        async with self._send_lock:
            try:
                if isinstance(message, str):
                    await self.websocket.send_text(message)
                else:
                    await self.websocket.send_bytes(message)
            except (WebSocketDisconnect, RuntimeError, OSError) as exc:
                raise TransportClosed(str(exc)) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.websocket.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError, OSError):
                await self.websocket.close(code, reason)
