"""One media clock per event loop: every call's paced audio sent from one timer callback.

A playout whose sink can write at once (`send_audio_now`) parks its task on the clock while it only has
frames to pace, pauses to time, or nothing to do. The clock then drives it: one timer, at most every
`TICK_S` (or at the earliest due frame when later), sends every registered playout's due frames in one
callback, and audio or a clear queued for a parked playout is served in one `call_soon` callback shared by
all the playouts poked in the same loop iteration. A task per call is woken only for what needs awaiting
(a clear, a mark, the end of a segment, a sink that cannot write now).
"""

from __future__ import annotations

import asyncio
import math
from typing import Protocol
from weakref import WeakKeyDictionary

#: The shortest time between two timer ticks: a paced frame goes out at most this late.
TICK_S = 0.01


class ClockDriven(Protocol):
    """What the clock drives (a parked `Playout`)."""

    def serve(self, now: float) -> float | None:
        """Send what is due at `now`; the next time it needs serving (inf: only when poked), or None when
        it has handed itself back to its task (the clock then forgets it)."""
        ...


class MediaClock:
    """Drives parked playouts from one timer (see the module's docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tick_s: float = TICK_S) -> None:
        self._loop = loop
        self._tick_s = tick_s
        self._due: dict[ClockDriven, float] = {}
        self._poked: dict[ClockDriven, None] = {}  # an ordered set
        self._soon: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._last_tick = -math.inf

    def __len__(self) -> int:
        return len(self._due)

    def park(self, playout: ClockDriven, due: float) -> None:
        """Drive `playout` from now on; it next needs serving at `due` (inf: only when poked)."""
        self._due[playout] = due
        self._arm(due)

    def leave(self, playout: ClockDriven) -> None:
        """Stop driving `playout` (its task was cancelled)."""
        self._due.pop(playout, None)
        self._poked.pop(playout, None)

    def poke(self, playout: ClockDriven) -> None:
        """Something was queued for `playout`: serve it in the next loop iteration (with every other
        playout poked meanwhile)."""
        if playout not in self._due:
            return  # its task runs it
        self._poked[playout] = None
        if self._soon is None:
            self._soon = self._loop.call_soon(self._serve_poked)

    def _arm(self, due: float) -> None:
        if due >= self._timer_at:
            return
        at = max(due, self._last_tick + self._tick_s)
        if at >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._tick)

    def _serve_poked(self) -> None:
        self._soon = None
        poked, self._poked = self._poked, {}
        now = self._loop.time()
        for playout in poked:
            if playout in self._due:
                self._serve(playout, now)

    def _tick(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        now = self._loop.time()
        self._last_tick = now
        next_due = math.inf
        for playout, due in list(self._due.items()):
            if due <= now:
                due = self._serve(playout, now)
            if due < next_due:
                next_due = due
        if next_due < math.inf:
            self._arm(next_due)

    def _serve(self, playout: ClockDriven, now: float) -> float:
        due = playout.serve(now)
        if due is None:
            del self._due[playout]
            return math.inf
        self._due[playout] = due
        if due < self._timer_at:
            self._arm(due)
        return due


_clocks: WeakKeyDictionary[asyncio.AbstractEventLoop, MediaClock] = WeakKeyDictionary()


def media_clock(loop: asyncio.AbstractEventLoop) -> MediaClock:
    """The loop's media clock (made on first use)."""
    clock = _clocks.get(loop)
    if clock is None:
        clock = _clocks[loop] = MediaClock(loop)
    return clock
