"""`FramedStream`: a call transport made of a message socket (a WebSocket) and a provider's framing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from app.calls.transport import BadMessage, CallDataChannel, TransportEvent
from app.handoff import HandleNow
from app.providers.base import DataChannelFraming, FrameError, StreamFraming, StreamStart


class MessageSocket(Protocol):
    """Whole messages both ways (a WebSocket). Raises TransportClosed once the other side is gone."""

    async def receive(self) -> str | bytes: ...

    async def send(self, message: str | bytes) -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


class FramedDataChannel:
    """A framing's data messages sent over the stream's socket."""

    def __init__(self, socket: MessageSocket, framing: DataChannelFraming) -> None:
        self._socket = socket
        self._framing = framing

    async def send_joined(self, call_id: str) -> None:
        for message in self._framing.joined_messages(call_id):
            await self._socket.send(message)

    async def send_transcript(self, role: str, text: str, final: bool) -> None:
        await self._socket.send(self._framing.encode_transcript(role, text, final))

    async def send_pong(self, timestamp: float | None) -> None:
        await self._socket.send(self._framing.encode_pong(timestamp))

    async def send_state(self, state: str) -> None:
        await self._socket.send(self._framing.encode_state(state))


class FramedStream:
    """A provider media stream: the socket carries the messages, the framing gives them meaning."""

    def __init__(self, socket: MessageSocket, framing: StreamFraming) -> None:
        self.socket = socket
        self.framing = framing
        self.rules = framing.rules
        self.media_idle_timeout_s = framing.media_idle_timeout_s
        channel = framing.data_channel
        self.data: CallDataChannel | None = FramedDataChannel(socket, channel) if channel else None
        # Bound once: these run for every 20 ms frame.
        self._receive_message = socket.receive
        self._send_message = socket.send
        self._decode = framing.decode
        self._encode_audio = framing.encode_audio
        self._send_now: Callable[[str | bytes], bool] | None = getattr(socket, "send_now", None)
        self._handle_messages_now = getattr(socket, "handle_messages_now", None)

    # Properties, not bound methods kept on the instance: those would make a cycle that only the cycle
    # collector's full pass frees (see CallSession._let_go).
    @property
    def send_audio_now(self) -> Callable[[bytes], bool] | None:
        """The playout's synchronous path (`AudioSink`), when the socket can write at once."""
        return self._send_audio_now if self._send_now is not None else None

    @property
    def handle_events_now(self) -> Callable[[HandleNow[TransportEvent] | None], None] | None:
        """Events as they arrive, to a synchronous handler (`EventsNow`), when the socket can hand them."""
        return self._handle_events_now if self._handle_messages_now is not None else None

    def opening(self) -> StreamStart | None:
        return self.framing.opening()

    async def receive(self) -> TransportEvent | None:
        message = await self._receive_message()
        if type(message) is not str and type(message) is not bytes:
            return message  # type: ignore[return-value]  # decoded already, by `_event_now`
        return self._event_of(message)

    def _event_of(self, message: str | bytes) -> TransportEvent | None:
        try:
            return self._decode(message)
        except FrameError as exc:
            return BadMessage(str(exc))

    def _handle_events_now(self, handler: HandleNow[TransportEvent] | None) -> None:
        if handler is None:
            self._handle_messages_now(None)  # type: ignore[misc]  # set with this method
            return

        def event_now(message: object) -> object | None:
            # Only called with nothing queued, so every earlier message is decoded: the order holds.
            event = self._event_of(message)  # type: ignore[arg-type]  # the socket's own messages
            return None if event is None else handler(event)

        self._handle_messages_now(event_now)  # type: ignore[misc]  # set with this method

    async def send_audio(self, payload: bytes) -> None:
        await self._send_message(self._encode_audio(payload))

    def _send_audio_now(self, payload: bytes) -> bool:
        return self._send_now(self._encode_audio(payload))  # type: ignore[misc]  # set with this method

    async def send_mark(self, name: str) -> None:
        await self._send_message(self.framing.encode_mark(name))

    async def send_clear(self) -> None:
        await self._send_message(self.framing.encode_clear())

    async def send_dtmf(self, digits: str, tone_ms: int) -> bool:
        return False  # provider streams carry no DTMF out: the provider's API or in-band tones do

    async def close(self) -> None:
        await self.socket.close()
