"""Agent audio to the provider: cut into wire frames, paced in real time, followed by marks."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from app.media.formats import AudioFormat
from app.media.framing import FrameSplitter
from app.media.pacing import PlayoutClock
from app.providers.base import OutboundRules

# A pause this long in the agent's audio (at least) ends a segment: the partial frame is sent, a mark follows.
SEGMENT_GAP_S = 0.1
# During long segments a mark is sent at least this often, so the played position stays fresh.
MARK_EVERY_MS = 1000.0
#: Agent audio queued beyond this (an agent running far ahead of real time) is dropped, not buffered.
DEFAULT_MAX_QUEUED_MS = 120_000


class AudioSink(Protocol):
    """Where the playout sends (a call transport)."""

    async def send_audio(self, payload: bytes) -> None: ...

    async def send_mark(self, name: str) -> None: ...

    async def send_clear(self) -> None: ...


@dataclass(slots=True)
class PendingMark:
    name: str
    position_ms: float  # agent audio sent before the mark (what has played once it comes back)
    cleared: bool = False  # a clear was sent after it: the audio before it was dropped, not played


class Playout:
    """Sends agent audio for one call. `enqueue`/`clear` are called by the session; `run` does the I/O."""

    def __init__(
        self,
        sink: AudioSink,
        wire_format: AudioFormat,
        rules: OutboundRules,
        lead_ms: float,
        on_segment_end: Callable[[], Awaitable[None]] | None = None,
        max_queued_ms: int = DEFAULT_MAX_QUEUED_MS,
    ) -> None:
        self._sink = sink
        self._on_segment_end = on_segment_end
        self._rules = rules
        self._format = wire_format
        self._splitter = FrameSplitter(rules.chunk_bytes(wire_format))
        self._max_queued_bytes = wire_format.bytes_for_ms(max_queued_ms)
        self._queued_bytes = 0
        # A pause ends a segment only if it is longer than the gaps between the agent's bursts, which can be
        # as long as one outbound frame (Exotel's 200 ms chunks at 8 kHz): a shorter wait would pad
        # half-frames with silence mid-speech.
        frame_s = wire_format.duration_ms(self._splitter.frame_bytes) / 1000
        self._segment_gap_s = max(SEGMENT_GAP_S, 1.5 * frame_s)
        self._frames: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._clock = PlayoutClock(lead_ms)
        self._clear_requested = False
        self._sent_ms = 0.0
        self._marked_ms = 0.0
        self._mark_count = 0
        self._pending: dict[str, PendingMark] = {}
        # When the current pause began (None: audio came since). One timer serves a whole pause, so a frame
        # every 20 ms costs no timer of its own (what asyncio.timeout per wait cost).
        self._idle_since: float | None = None
        self._gap_timer: asyncio.TimerHandle | None = None
        self.frames_sent = 0

    @property
    def wire_format(self) -> AudioFormat:
        """The format the provider plays (what `enqueue` takes)."""
        return self._format

    @property
    def sent_ms(self) -> float:
        """Agent audio sent so far (after a clear: what the caller heard, by the clock)."""
        return self._sent_ms

    @property
    def queued_ms(self) -> float:
        """Agent audio waiting to be sent."""
        return self._format.duration_ms(self._queued_bytes + self._splitter.pending)

    @property
    def full(self) -> bool:
        """At the queue's limit: `enqueue` drops what it is given."""
        return self._queued_bytes + self._splitter.pending >= self._max_queued_bytes

    def enqueue(self, wire_audio: bytes) -> float:
        """Queue agent audio; returns how many ms of it were dropped because the queue is full (else 0).

        A chunk that starts below the limit is taken whole, so the queue may pass the limit by one chunk
        (bounded by the agent link's message size)."""
        if self.full:
            return self._format.duration_ms(len(wire_audio))
        for frame in self._splitter.push(wire_audio):
            self._frames.append(frame)
            self._queued_bytes += len(frame)
        self._idle_since = None
        self._wake.set()
        return 0.0

    def clear(self) -> None:
        """Barge-in: drop queued audio here and, via `clear`, at the provider."""
        self._frames.clear()
        self._queued_bytes = 0
        self._splitter.clear()
        self._clear_requested = True
        self._idle_since = None
        self._wake.set()

    def mark_returned(self, name: str) -> PendingMark | None:
        """The provider reported a mark; None when it is not one of ours."""
        return self._pending.pop(name, None)

    async def run(self) -> None:
        try:
            await self._run(asyncio.get_running_loop())
        finally:
            if self._gap_timer is not None:
                self._gap_timer.cancel()

    async def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            if self._clear_requested:
                await self._send_clear(loop.time())
                continue
            if not self._frames:
                await self._idle(loop)
                continue
            delay = self._clock.wait_before_sending(loop.time())
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            frame = self._frames.popleft()
            self._queued_bytes -= len(frame)
            duration_ms = self._format.duration_ms(len(frame))
            await self._sink.send_audio(frame)
            self._clock.sent(loop.time(), duration_ms)
            self._idle_since = None
            self._sent_ms += duration_ms
            self.frames_sent += 1
            if self._sent_ms - self._marked_ms >= MARK_EVERY_MS:
                await self._send_mark()

    async def _idle(self, loop: asyncio.AbstractEventLoop) -> None:
        """Nothing queued: wait for audio; after a pause, flush the partial frame and mark the segment."""
        self._wake.clear()
        if not self._splitter.pending and self._sent_ms == self._marked_ms:
            await self._wake.wait()
            return
        now = loop.time()
        if self._idle_since is None:
            self._idle_since = now
        pause_ends = self._idle_since + self._segment_gap_s
        if now < pause_ends:
            if self._gap_timer is None:  # one set earlier in this pause fires first, and re-arms
                self._gap_timer = loop.call_at(pause_ends, self._gap_timer_fired)
            await self._wake.wait()
            return  # audio came, or the timer: the run loop comes back here while nothing is queued
        self._idle_since = None
        rest = self._splitter.flush()
        if rest:
            if self._rules.pad_partial_chunks:
                rest += self._format.silence(self._splitter.frame_bytes - len(rest))
            self._frames.append(rest)
            self._queued_bytes += len(rest)
        else:
            await self._send_mark()
            if self._on_segment_end is not None:
                await self._on_segment_end()

    def _gap_timer_fired(self) -> None:
        self._gap_timer = None
        self._wake.set()

    async def _send_mark(self) -> None:
        if not self._rules.marks:
            self._marked_ms = self._sent_ms
            return
        self._mark_count += 1
        name = f"cb-{self._mark_count}"
        self._pending[name] = PendingMark(name, self._sent_ms)
        self._marked_ms = self._sent_ms
        await self._sink.send_mark(name)

    async def _send_clear(self, now: float) -> None:
        self._clear_requested = False
        await self._sink.send_clear()
        if self._rules.clear_returns_marks:
            for mark in self._pending.values():
                mark.cleared = True
        else:
            self._pending.clear()
        # The unplayed audio is gone: positions continue from what the caller heard.
        self._sent_ms -= self._clock.queued_ms(now)
        self._marked_ms = self._sent_ms
        self._clock.reset(now)
