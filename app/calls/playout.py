"""Agent audio to the provider: cut into wire frames, paced in real time, followed by marks."""

from __future__ import annotations

import asyncio
import enum
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from app.calls.media_clock import MediaClock, media_clock
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
    """Where the playout sends (a call transport).

    A sink that can also write a frame synchronously has `send_audio_now(payload) -> bool` (True: written;
    False: it cannot now, paused or closed, and `send_audio` will wait or raise): its playout is then
    driven by the loop's media clock. Any other sink's playout runs its own paced loop."""

    async def send_audio(self, payload: bytes) -> None: ...

    async def send_mark(self, name: str) -> None: ...

    async def send_clear(self) -> None: ...


class _Step(enum.Enum):
    """What a playout does next (`Playout._next_step`)."""

    SEND = enum.auto()  # the queue's first frame may go now
    PACE = enum.auto()  # wait until `_due_at` before sending it (the lead is used up)
    PAUSE = enum.auto()  # nothing queued: a pause that ends the segment at `_due_at`
    IDLE = enum.auto()  # nothing queued, nothing to mark: wait for audio or a clear
    CLEAR = enum.auto()  # a clear was asked for
    MARK = enum.auto()  # a mark is due (every MARK_EVERY_MS of audio)
    SEGMENT_END = enum.auto()  # the pause ended with the partial frame sent: mark, `on_segment_end`


_SEND, _PACE, _PAUSE, _IDLE = _Step.SEND, _Step.PACE, _Step.PAUSE, _Step.IDLE
_CLEAR, _MARK, _SEGMENT_END = _Step.CLEAR, _Step.MARK, _Step.SEGMENT_END
#: The steps that only wait: on the media clock's path, the clock takes them.
_WAITS = frozenset((_PACE, _PAUSE, _IDLE))


def _cannot_send_now(payload: bytes) -> bool:
    return False


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
        self._due_at = 0.0  # when the step that waits (pacing, a pause) is due
        # The media clock's path (`run` takes it when the sink has `send_audio_now`).
        self._media_clock: MediaClock | None = None
        self._send_now: Callable[[bytes], bool] = _cannot_send_now
        self._handback: asyncio.Future[_Step] | None = None
        self.frames_sent = 0
        #: Called with each frame sent (while someone watches the call's levels; None otherwise).
        self.on_frame_sent: Callable[[bytes], None] | None = None

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
        self._notify()
        return 0.0

    def clear(self) -> None:
        """Barge-in: drop queued audio here and, via `clear`, at the provider."""
        self._frames.clear()
        self._queued_bytes = 0
        self._splitter.clear()
        self._clear_requested = True
        self._idle_since = None
        self._notify()

    def _notify(self) -> None:
        """Something was queued: wake whichever path waits for it."""
        self._wake.set()
        if self._media_clock is not None:
            self._media_clock.poke(self)

    def mark_returned(self, name: str) -> PendingMark | None:
        """The provider reported a mark; None when it is not one of ours."""
        return self._pending.pop(name, None)

    async def run(self) -> None:
        """Send the queued audio until cancelled; raises TransportClosed when the far end goes.

        With a sink that can write at once (`send_audio_now`), this task sleeps on the loop's media clock
        whenever nothing needs awaiting, and the clock sends the frames (`serve`)."""
        loop = asyncio.get_running_loop()
        send_now = getattr(self._sink, "send_audio_now", None)
        if send_now is not None:
            self._send_now = send_now
            self._media_clock = media_clock(loop)
        try:
            await self._run(loop)
        finally:
            if self._gap_timer is not None:
                self._gap_timer.cancel()
            if self._media_clock is not None:
                self._media_clock.leave(self)
                self._media_clock = None

    async def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        clock = self._media_clock
        while True:
            self._wake.clear()  # what set it before is seen by the step below
            step = self._next_step(loop.time())
            if clock is not None and step in _WAITS:
                step = await self._park(clock, loop, step)  # the step the clock could not take
                if step is not _SEGMENT_END:  # deciding again gives it, or what came since (a clear)
                    continue
            if step is _SEND:
                frame = self._frames.popleft()
                await self._sink.send_audio(frame)
                self._frame_sent(loop.time(), frame)
            elif step is _CLEAR:
                await self._send_clear(loop.time())
            elif step is _MARK:
                await self._send_mark()
            elif step is _SEGMENT_END:
                await self._send_mark()
                if self._on_segment_end is not None:
                    await self._on_segment_end()
            elif step is _PACE:
                await asyncio.sleep(self._due_at - loop.time())
            else:
                # One gap timer serves a pause: one set earlier in it fires first, and re-arms.
                if step is _PAUSE and self._gap_timer is None:
                    self._gap_timer = loop.call_at(self._due_at, self._gap_timer_fired)
                await self._wake.wait()  # audio came, a clear, or the gap timer

    def _next_step(self, now: float) -> _Step:
        """What to do next at `now` (both paths ask this). Does the bookkeeping that needs no I/O: starts
        a pause, and ends one by flushing the partial frame into the queue."""
        if self._sent_ms - self._marked_ms >= MARK_EVERY_MS:  # only right after the frame that made it due
            return _MARK
        if self._clear_requested:
            return _CLEAR
        if self._frames:
            delay = self._clock.wait_before_sending(now)
            if delay > 0:
                self._due_at = now + delay
                return _PACE
            return _SEND
        if not self._splitter.pending and self._sent_ms == self._marked_ms:
            return _IDLE
        if self._idle_since is None:
            self._idle_since = now
        pause_ends = self._idle_since + self._segment_gap_s
        if now < pause_ends:
            self._due_at = pause_ends
            return _PAUSE
        self._idle_since = None
        rest = self._splitter.flush()
        if not rest:
            return _SEGMENT_END
        if self._rules.pad_partial_chunks:
            rest += self._format.silence(self._splitter.frame_bytes - len(rest))
        self._frames.append(rest)
        self._queued_bytes += len(rest)
        return self._next_step(now)

    def _frame_sent(self, now: float, frame: bytes) -> None:
        duration_ms = self._format.duration_ms(len(frame))
        self._clock.sent(now, duration_ms)
        self._idle_since = None
        self._sent_ms += duration_ms
        self.frames_sent += 1
        if self.on_frame_sent is not None:
            self.on_frame_sent(frame)

    # --- the media clock's path ------------------------------------------------------------------

    async def _park(self, clock: MediaClock, loop: asyncio.AbstractEventLoop, step: _Step) -> _Step:
        """Let the clock drive this playout until a step needs this task; returns that step (a segment's
        end must be taken as handed back: deciding it is what ends the pause)."""
        self._handback = handback = loop.create_future()
        clock.park(self, math.inf if step is _IDLE else self._due_at)
        try:
            return await handback
        finally:
            self._handback = None

    def serve(self, now: float) -> float | None:
        """The media clock's call: send the frames due at `now` at once; returns when this playout next
        needs serving (inf: when audio or a clear comes), or None after handing back to its task (a step
        to await, or a sink that cannot write now)."""
        try:
            while True:
                step = self._next_step(now)
                if step is _SEND:
                    frame = self._frames[0]
                    if not self._send_now(frame):  # the task's send waits for the sink, or raises
                        self._hand_back(step)
                        return None
                    self._frames.popleft()
                    self._frame_sent(now, frame)
                elif step is _PACE or step is _PAUSE:
                    return self._due_at
                elif step is _IDLE:
                    return math.inf
                elif step is _MARK and not self._rules.marks:
                    self._take_mark()  # no I/O: nothing to send
                else:
                    self._hand_back(step)
                    return None
        except Exception as exc:  # a failure belongs to this call, not to the clock's other calls
            self._hand_back(exc)
            return None

    def _hand_back(self, outcome: _Step | Exception) -> None:
        handback = self._handback
        if handback is not None and not handback.done():
            if isinstance(outcome, Exception):
                handback.set_exception(outcome)
            else:
                handback.set_result(outcome)

    def _gap_timer_fired(self) -> None:
        self._gap_timer = None
        self._wake.set()

    async def _send_mark(self) -> None:
        name = self._take_mark()
        if name is not None:
            await self._sink.send_mark(name)

    def _take_mark(self) -> str | None:
        """Account for a mark at what was sent so far; the mark's name, or None when the sink has none."""
        self._marked_ms = self._sent_ms
        if not self._rules.marks:
            return None
        self._mark_count += 1
        name = f"cb-{self._mark_count}"
        self._pending[name] = PendingMark(name, self._sent_ms)
        return name

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
