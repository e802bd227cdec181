"""A webRtc call as CallSession sees it: one RTCPeerConnection, as a CallTransport.

The client's audio track is read frame by frame (48 kHz PCM, mixed to mono); the stream starts when the
first frame arrives or the connection is up, whichever is first. The agent's audio leaves through
`AgentAudioTrack`, paced by the session's playout (no marks: what the client heard is known by the clock,
as for RTP); a clear drops what the track still holds. The client closing its peer connection stops the
stream (its DELETE on the session URL reaches the session through `app.webrtc.routes`). A data channel the
client opens carries the serverWebSocket medium's JSON data messages both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from app.calls.transport import BadMessage, CallDataChannel, TransportClosed, TransportEvent
from app.providers.base import (
    FrameError,
    OutboundRules,
    StreamAudio,
    StreamIgnored,
    StreamProviderError,
    StreamStart,
    StreamStop,
)
from app.providers.server_websocket import ServerWebSocketFraming
from app.webrtc.tracks import FRAME_MS, WIRE_FORMAT, AgentAudioTrack, mono_pcm

log = logging.getLogger(__name__)

#: Sent ahead of real time: the track holds at most this much, so a clear drops little.
WEBRTC_LEAD_MS = 60.0
WEBRTC_RULES = OutboundRules(
    chunk_ms=FRAME_MS, pad_partial_chunks=True, marks=False, clear_returns_marks=False, lead_ms=WEBRTC_LEAD_MS
)
CLIENT_CLOSED = "the client closed the peer connection"

_CLOSED = object()


class DataChannelMessages:
    """serverWebSocket's data messages over the client's data channel; sent once it is open (the call
    joins before the channel's SCTP association is up, so `call_started` may wait for it)."""

    def __init__(self) -> None:
        self._framing = ServerWebSocketFraming(WIRE_FORMAT.sample_rate, WIRE_FORMAT.sample_rate)
        self._channel: RTCDataChannel | None = None
        self._waiting: list[str] = []

    def attach(self, channel: RTCDataChannel) -> None:
        """The client's channel arrived: what was waiting goes now."""
        self._channel = channel
        if channel.readyState == "open":
            self._flush()
        else:
            channel.on("open", self._flush)

    def decode(self, message: str | bytes) -> TransportEvent:
        if isinstance(message, bytes):
            return StreamIgnored("binary data channel message")
        try:
            return self._framing.decode(message)
        except FrameError as exc:
            return BadMessage(str(exc))

    def _send(self, message: str) -> None:
        channel = self._channel
        if channel is None or channel.readyState == "connecting":
            self._waiting.append(message)
        elif channel.readyState == "open":
            channel.send(message)

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        for message in waiting:
            self._send(message)

    async def send_joined(self, call_id: str) -> None:
        for message in self._framing.joined_messages(call_id):
            self._send(str(message))

    async def send_transcript(self, role: str, text: str, final: bool) -> None:
        self._send(self._framing.encode_transcript(role, text, final))

    async def send_pong(self, timestamp: float | None) -> None:
        self._send(self._framing.encode_pong(timestamp))

    async def send_state(self, state: str) -> None:
        self._send(self._framing.encode_state(state))


class WebRtcTransport:
    """One webRtc call's far end (CallTransport)."""

    rules: OutboundRules = WEBRTC_RULES

    def __init__(
        self, peer: RTCPeerConnection, media_idle_timeout_s: float | None, data_channel: bool
    ) -> None:
        self.peer = peer
        self.outbound = AgentAudioTrack()
        self.media_idle_timeout_s = media_idle_timeout_s
        self._messages = DataChannelMessages() if data_channel else None
        self.data: CallDataChannel | None = self._messages
        self.stream_id = str(uuid.uuid4())
        self._events: asyncio.Queue[TransportEvent | object] = asyncio.Queue()
        self._started = False
        self._stopped = False
        self._closed = False
        self._reader: asyncio.Task[None] | None = None
        peer.on("track", self._track_arrived)
        peer.on("datachannel", self._channel_arrived)
        peer.on("connectionstatechange", self._connection_changed)

    # --- what the client does -------------------------------------------------------------------

    def _track_arrived(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._reader is None:
            self._reader = asyncio.create_task(self._read(track), name=f"webrtc-{self.stream_id}-in")

    def _channel_arrived(self, channel: RTCDataChannel) -> None:
        if self._messages is None:
            return
        self._messages.attach(channel)
        messages = self._messages
        channel.on("message", lambda message: self._events.put_nowait(messages.decode(message)))

    def _connection_changed(self) -> None:
        state = self.peer.connectionState
        if state == "connected":
            self._start()
        elif state == "failed":
            # The client is gone without closing (ICE consent lapsed, DTLS failed): recorded; the call
            # ends `connection_error` when the media idle timeout sees no audio, as an RTP timeout does.
            self._events.put_nowait(
                StreamProviderError("webrtc_failed", "the WebRTC connection failed (ICE or DTLS)")
            )
        elif state == "closed" and not self._closed:
            self._stop(CLIENT_CLOSED)

    async def _read(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                self._start()
                self._events.put_nowait(StreamAudio(mono_pcm(frame)))  # type: ignore[arg-type]
        except MediaStreamError:  # the client's track ended: its connection is closing
            if not self._closed and self.peer.connectionState != "failed":
                self._stop(CLIENT_CLOSED)

    def _start(self) -> None:
        if not self._started and not self._stopped:
            self._started = True
            self._events.put_nowait(StreamStart(self.stream_id, None, WIRE_FORMAT))

    def _stop(self, reason: str) -> None:
        if not self._stopped:
            self._stopped = True
            self._events.put_nowait(StreamStop(reason))

    # --- CallTransport ------------------------------------------------------------------------

    def opening(self) -> StreamStart | None:
        return None  # the stream starts once media flows

    async def receive(self) -> TransportEvent | None:
        if self._closed and self._events.empty():
            raise TransportClosed("the WebRTC call is over")
        event = await self._events.get()
        if event is _CLOSED:
            raise TransportClosed("the WebRTC call is over")
        return event  # type: ignore[return-value]

    async def send_audio(self, payload: bytes) -> None:
        if not self.send_audio_now(payload):
            raise TransportClosed("the WebRTC call is over")

    def send_audio_now(self, payload: bytes) -> bool:
        """`send_audio` without awaiting (the playout's media clock path); False once the call is over."""
        if self._closed:
            return False
        self.outbound.push(payload)
        return True

    async def send_mark(self, name: str) -> None:
        """WebRTC has no marks (the rules say so); never called."""

    async def send_clear(self) -> None:
        self.outbound.clear()

    async def send_dtmf(self, digits: str, tone_ms: int) -> bool:
        return False  # aiortc sends no RFC 4733 events: the digits are played as tones

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._events.put_nowait(_CLOSED)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self.outbound.stop()
        try:
            await self.peer.close()
        except Exception:  # a peer connection half torn down by the client: the call is over anyway
            log.debug("closing a WebRTC peer connection failed", exc_info=True)
