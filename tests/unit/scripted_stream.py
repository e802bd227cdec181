"""A provider stream for session tests: plays scripted messages, keeps what callbridge sends."""

from __future__ import annotations

import asyncio
import base64

import orjson

from app.calls.framed_stream import FramedStream
from app.calls.transport import TransportClosed
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
