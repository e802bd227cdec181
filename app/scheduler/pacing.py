"""How fast one batch may dial: a token bucket filled at callsPerMinute, slowed down by provider 429s."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

#: Dials a bucket may save up: one second's worth (at least one), so a paused tick cannot cause a burst.
BURST_S = 1.0
#: Float sums of fractional tokens fall just short of whole ones (0.1 added ten times is 0.9999...).
TOKEN_EPSILON = 1e-9
#: How long a 429 halves the pace.
SLOWDOWN_S = 60.0


@dataclass
class Pace:
    """A token bucket: `calls_per_minute` tokens a minute, one per dial; `slow_down` honours a 429."""

    calls_per_minute: float
    tokens: float = 0.0
    updated: datetime | None = None
    #: No tokens accrue before this (the provider's Retry-After).
    blocked_until: datetime | None = None
    #: The pace is halved until this.
    slow_until: datetime | None = None

    def available(self, now: datetime) -> int:
        """Whole dials allowed now."""
        self._refill(now)
        return int(self.tokens + TOKEN_EPSILON)

    def take(self, now: datetime, count: int) -> None:
        """Spend `count` dials (at most what is available)."""
        self._refill(now)
        self.tokens = max(0.0, self.tokens - count)

    def give_back(self, count: int) -> None:
        """Return dials that were not made (claimed fewer calls than allowed)."""
        self.tokens = min(self._capacity(self.calls_per_minute), self.tokens + count)

    def slow_down(self, now: datetime, retry_after_s: float) -> None:
        """The provider answered 429: nothing before Retry-After, then half the pace for SLOWDOWN_S."""
        self._refill(now)
        self.tokens = 0.0
        self.blocked_until = max(self.blocked_until or now, now + timedelta(seconds=retry_after_s))
        self.slow_until = self.blocked_until + timedelta(seconds=SLOWDOWN_S)

    def rate_per_s(self, now: datetime) -> float:
        """The pace in force at `now` (dials per second)."""
        rate = self.calls_per_minute / 60.0
        slowed = self.slow_until is not None and now < self.slow_until
        return rate / 2 if slowed else rate

    def _refill(self, now: datetime) -> None:
        if self.updated is None:  # a new bucket starts full, so a batch starts at once
            self.updated, self.tokens = now, self._capacity(self.calls_per_minute)
        if self.blocked_until is not None and now < self.blocked_until:
            self.updated = now
            return
        since = max(self.updated, self.blocked_until or self.updated)
        elapsed = max(0.0, (now - since).total_seconds())
        rate = self.rate_per_s(now)
        self.tokens = min(self._capacity(rate * 60), self.tokens + elapsed * rate)
        self.updated = now

    @staticmethod
    def _capacity(calls_per_minute: float) -> float:
        return max(1.0, calls_per_minute / 60.0 * BURST_S)
