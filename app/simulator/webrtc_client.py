"""A WebRTC client of callbridge's webRtc medium, in Python (aiortc): what a browser does, for tests and
bench/webrtc_echo.py.

It posts a complete offer (ICE gathered) to the call's joinUrl, sets the answer, plays PCM on its audio
track in real time and records the agent's audio from the moment it starts playing, so the lag of the echo
in the recording is the round trip. ICE stays on the host addresses `app.webrtc.ice` was told to use.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import httpx
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from app.webrtc.offer import SDP_MEDIA_TYPE
from app.webrtc.tracks import FRAME_BYTES, AgentAudioTrack, mono_pcm


class JoinRefused(Exception):
    """The joinUrl refused the offer: its status and the API's error body."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


@dataclass
class WebRtcClient:
    """One client call: a peer connection, its outbound track, and what it heard."""

    peer: RTCPeerConnection = field(
        default_factory=lambda: RTCPeerConnection(RTCConfiguration(iceServers=[]))
    )
    outbound: AgentAudioTrack = field(default_factory=AgentAudioTrack)
    #: The session URL (`Location`) once the offer was answered.
    location: str | None = None
    channel: RTCDataChannel | None = None
    #: Text messages that came on the data channel.
    messages: list[str] = field(default_factory=list)
    _heard: bytearray = field(default_factory=bytearray)
    _recording: bool = False
    _frames_in: int = 0
    _reader: asyncio.Task[None] | None = None
    _frame_arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.peer.addTrack(self.outbound)
        self.peer.on("track", self._track)

    def open_data_channel(self) -> None:
        """Offer a data channel too (before `join`): serverWebSocket's data messages come on it."""
        self.channel = self.peer.createDataChannel("callbridge")
        self.channel.on("message", lambda message: self.messages.append(message))

    async def offer(self) -> str:
        """The complete offer (aiortc gathers every candidate before setLocalDescription returns)."""
        await self.peer.setLocalDescription(await self.peer.createOffer())
        return self.peer.localDescription.sdp

    async def join(self, http: httpx.AsyncClient, join_url: str) -> None:
        """POST the offer to `join_url` and set the answer; JoinRefused unless it was answered (201)."""
        response = await http.post(
            join_url, content=await self.offer(), headers={"Content-Type": SDP_MEDIA_TYPE}
        )
        if response.status_code != 201:
            raise JoinRefused(response.status_code, response.text)
        self.location = response.headers["location"]
        await self.peer.setRemoteDescription(RTCSessionDescription(response.text, "answer"))

    def play(self, pcm: bytes) -> None:
        """Queue 48 kHz s16le mono PCM for the agent (sent in real time from now) and record from now."""
        self._heard.clear()
        self._recording = True
        for start in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES):
            self.outbound.push(pcm[start : start + FRAME_BYTES])

    @property
    def frames_in(self) -> int:
        """Frames of the agent's audio received so far (silence included)."""
        return self._frames_in

    def heard(self) -> bytes:
        """The agent's audio (48 kHz s16le mono) since `play`."""
        return bytes(self._heard)

    def heard_seconds(self) -> float:
        return len(self._heard) / 2 / 48000

    async def hear(self, seconds: float = 0.0) -> None:
        """Wait until the agent's first frame arrived and, after `play`, `seconds` of its audio."""
        while self._frames_in == 0 or self.heard_seconds() < seconds:
            self._frame_arrived.clear()
            await self._frame_arrived.wait()

    async def hang_up(self, http: httpx.AsyncClient) -> httpx.Response:
        """DELETE the session URL (WHIP's hang-up), then close the peer connection."""
        assert self.location is not None, "not joined"
        response = await http.delete(self.location)
        await self.close()
        return response

    async def close(self) -> None:
        """Close the peer connection (the server sees the client leave)."""
        await self.peer.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    def _track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._reader = asyncio.create_task(self._record(track))

    async def _record(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                self._frames_in += 1
                if self._recording:
                    self._heard += mono_pcm(frame)  # type: ignore[arg-type]
                self._frame_arrived.set()
