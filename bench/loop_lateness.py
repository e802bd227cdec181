"""How late a load generator's event loop wakes from short sleeps: its worst and p99, in bounded memory."""

from __future__ import annotations

import asyncio
import time

SLEEP_S = 0.005
BIN_MS = 0.1
MAX_MS = 2000.0  # later wake-ups land in the last bin (the worst is kept exactly)


class Lateness:
    """A histogram of wake-up lateness on SLEEP_S sleeps (BIN_MS bins) plus the exact worst."""

    def __init__(self) -> None:
        self.bins = [0] * (int(MAX_MS / BIN_MS) + 1)
        self.count = 0
        self.worst_s = 0.0
        self.worst_at = 0.0  # time.monotonic() of the worst wake-up

    def add(self, late_s: float) -> None:
        late_s = max(0.0, late_s)
        self.bins[min(len(self.bins) - 1, int(late_s * 1000 / BIN_MS))] += 1
        self.count += 1
        if late_s > self.worst_s:
            self.worst_s, self.worst_at = late_s, time.monotonic()

    @property
    def worst_ms(self) -> float:
        return 1000 * self.worst_s

    def percentile_ms(self, share: float) -> float:
        """The upper edge of the bin holding the `share` quantile (0 when nothing was recorded)."""
        wanted, seen = share * self.count, 0
        for index, n in enumerate(self.bins):
            seen += n
            if n and seen >= wanted:
                return min((index + 1) * BIN_MS, self.worst_ms)
        return 0.0

    async def watch(self) -> None:
        """Record lateness until cancelled."""
        while True:
            start = time.monotonic()
            await asyncio.sleep(SLEEP_S)
            self.add(time.monotonic() - start - SLEEP_S)
