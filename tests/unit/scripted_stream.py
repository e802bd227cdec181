"""A provider stream for session tests: plays scripted messages, keeps what callbridge sends."""

from __future__ import annotations

import asyncio
import base64

import orjson

from app.calls.framed_stream import FramedStream
from app.calls.transport import TransportClosed
from app.handoff import HandleNow, Handoff
from app.providers.base import StreamFraming
from app.providers.twilio import TwilioFraming


class ScriptedSocket:
    """Plays a fixed list of provider messages, then stays open until closed; records what is sent."""

    def __init__(self, messages: list[dict]) -> None:
        self._messages = [orjson.dumps(m).decode() for m in messages]
        self._closed = asyncio.Event()
        self.sent: list[dict] = []

    async def receive(self) -> str:
        if self._messages:
            return self._messages.pop(0)
        await self._closed.wait()
        raise TransportClosed("closed")

    async def send(self, message: str | bytes) -> None:
        self.sent.append(orjson.loads(message))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._closed.set()

    def events(self) -> list[str]:
        return [m["event"] for m in self.sent]

    def audio(self) -> bytes:
        return b"".join(base64.b64decode(m["media"]["payload"]) for m in self.sent if m["event"] == "media")


def scripted_stream(messages: list[dict], framing: StreamFraming | None = None) -> FramedStream:
    """A Twilio stream (by default) that plays `messages`; `.socket` holds what callbridge sent."""
    return FramedStream(ScriptedSocket(messages), framing or TwilioFraming())


class HandingSocket:
    """A socket that hands messages over as the direct WebSocket path does (`handle_messages_now`):
    `deliver` plays the part of `data_received`; counts what reached `receive`."""

    def __init__(self) -> None:
        self._inbox: Handoff[object] = Handoff()
        self.sent: list[dict] = []
        self.received = 0  # messages (or events) the session's task took through `receive`

    @property
    def idle(self) -> bool:
        """The session's task waits for a message with none queued: the next one is handed over now."""
        return self._inbox.idle

    def deliver(self, message: dict) -> None:
        self._inbox.put(orjson.dumps(message).decode())

    def handle_messages_now(self, handler: HandleNow[object] | None) -> None:
        self._inbox.handle_now(handler)

    async def receive(self) -> object:
        item = await self._inbox.get()
        self.received += 1
        return item

    async def send(self, message: str | bytes) -> None:
        self.sent.append(orjson.loads(message))

    def send_now(self, message: str | bytes) -> bool:
        self.sent.append(orjson.loads(message))
        return True

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._inbox.end(lambda: TransportClosed("closed"))

    def audio(self) -> bytes:
        return b"".join(base64.b64decode(m["media"]["payload"]) for m in self.sent if m["event"] == "media")
