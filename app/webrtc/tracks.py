"""Audio between aiortc's frames and the call's PCM: 48 kHz s16le mono both ways, 20 ms frames.

aiortc decodes the client's Opus to 48 kHz stereo frames (mixed down here) and encodes whatever frames an
outbound track gives it. Its sender stamps each packet from the frames' sample count, not the clock, so
the outbound track keeps real time itself: a frame every 20 ms, the agent's audio when the playout queued
some, silence when not (a gap would bunch up in the client's jitter buffer).

The agent's audio reaches the track as irregularly as the caller's reached the agent (an echo, a bot
answering as it hears). Silence put in for a frame that is a little late would stay in the middle of the
agent's words and push the rest 20 ms later; so while the agent speaks, a late frame is waited for (up to
`LATE_WAIT_MS`) and the frames after it catch up: the client's jitter buffer takes that like network
jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
from collections import deque

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from app.media.formats import pcm16

SAMPLE_RATE = 48000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
FRAME_S = FRAME_MS / 1000
#: The format the call's session sees on the wire (Opus's own rate: no resampling here).
WIRE_FORMAT = pcm16(SAMPLE_RATE)
FRAME_BYTES = WIRE_FORMAT.bytes_for_ms(FRAME_MS)
#: How long past its slot the agent's next frame is waited for while the agent speaks (then: silence).
LATE_WAIT_MS = 100
#: Further behind than this (the loop stalled), the track goes on from now instead of in a burst.
MAX_BEHIND_S = 0.1
_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
_SILENCE = bytes(FRAME_BYTES)


def mono_pcm(frame: AudioFrame) -> bytes:
    """A decoded frame as s16le mono PCM at its own rate (channels averaged)."""
    samples = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        mixed = samples.astype(np.int32).mean(axis=0) if channels > 1 else samples[0]
    else:
        interleaved = samples.reshape(-1, channels)
        mixed = interleaved.astype(np.int32).mean(axis=1) if channels > 1 else interleaved[:, 0]
    return np.asarray(mixed, dtype="<i2").tobytes()


class AgentAudioTrack(MediaStreamTrack):
    """The agent's audio to the client: 20 ms frames of 48 kHz mono, in real time."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._frames: deque[bytes] = deque()
        self._arrived = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._start: float | None = None
        self._sent = 0
        #: The last frame sent was the agent's (a stretch of its audio is playing).
        self._speaking = False

    @property
    def queued_frames(self) -> int:
        return len(self._frames)

    def push(self, pcm: bytes) -> None:
        """Queue one 20 ms frame (FRAME_BYTES of 48 kHz s16le mono)."""
        self._frames.append(pcm)
        self._arrived.set()

    def clear(self) -> None:
        """Drop every frame queued and not yet sent (barge-in)."""
        self._frames.clear()
        self._speaking = False

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = self._loop.time()
        if self._start is None:
            self._start = now
        due = self._start + self._sent * FRAME_S
        if due > now:
            await asyncio.sleep(due - now)
        elif due < now - MAX_BEHIND_S:
            self._start = now - self._sent * FRAME_S
        if self._speaking and not self._frames:
            await self._wait_for_late_frame(due + LATE_WAIT_MS / 1000)
        self._speaking = bool(self._frames)
        pcm = self._frames.popleft() if self._frames else _SILENCE
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(pcm)
        frame.pts = self._sent * FRAME_SAMPLES
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = _TIME_BASE
        self._sent += 1
        return frame

    async def _wait_for_late_frame(self, until: float) -> None:
        self._arrived.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(until):
                await self._arrived.wait()
