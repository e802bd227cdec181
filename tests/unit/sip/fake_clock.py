"""A manual clock for timer-driven SIP code: `advance(seconds)` fires what falls due, in time order."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Implements app.sip.transaction.Clock; time moves only when a test advances it."""

    def __init__(self) -> None:
        self._now = 0.0
        self._queue: list[tuple[float, int, FakeTimer]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self._now + max(delay, 0.0), callback)
        heapq.heappush(self._queue, (timer.when, next(self._order), timer))
        return timer

    def advance(self, seconds: float) -> None:
        """Move time forward, firing due callbacks (also those they schedule inside the window)."""
        end = self._now + seconds
        while self._queue and self._queue[0][0] <= end + 1e-9:
            when, _, timer = heapq.heappop(self._queue)
            if timer.cancelled:
                continue
            self._now = max(self._now, when)
            timer.callback()
        self._now = end

    def advance_to(self, when: float) -> None:
        self.advance(when - self._now)
