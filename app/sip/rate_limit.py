"""Per-source rate limits on new out-of-dialog SIP requests: a token bucket per source address and kind.

A scanner, or a PBX in a loop, sending INVITEs (or REGISTERs, OPTIONS...) faster than a limit's `rate` per
second beyond its `burst` is refused before anything is allocated for the request (no transaction, no call
row, no RTP port). Each source has buckets of its own, so one source's flood never takes another's calls.
Memory is bounded: a bucket idle long enough to be full again is forgotten (a new one is the same), and
beyond `max_buckets` the least recently used goes first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

#: Buckets kept at most (each a few dozen bytes): beyond it the least recently used is forgotten.
MAX_BUCKETS = 10_000
#: Idle buckets looked at (and forgotten when full) per request: eviction stays O(1) per request.
EVICTIONS_PER_TAKE = 2


@dataclass(frozen=True)
class RateLimit:
    """`rate` requests per second on average, `burst` at once."""

    rate: float
    burst: int

    @property
    def refill_s(self) -> float:
        """How long an empty bucket takes to be full again."""
        return self.burst / self.rate


@dataclass
class _Bucket:
    tokens: float
    updated: float


class SourceRateLimiter:
    """Token buckets by (kind, source): `take` says whether a request may go on, or how long to wait."""

    def __init__(
        self,
        limits: Mapping[str, RateLimit],
        *,
        max_buckets: int = MAX_BUCKETS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = dict(limits)
        self._max_buckets = max_buckets
        self._clock = clock
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, kind: str, source: str) -> float | None:
        """Take a token from `source`'s `kind` bucket: None when there was one, else the seconds until
        there will be one (for a Retry-After). KeyError for a kind without a limit."""
        limit = self._limits[kind]
        now = self._clock()
        self._forget_idle(now)
        key = (kind, source)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(limit.burst), now)
            if len(self._buckets) > self._max_buckets:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(float(limit.burst), bucket.tokens + (now - bucket.updated) * limit.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / limit.rate

    def _forget_idle(self, now: float) -> None:
        for _ in range(EVICTIONS_PER_TAKE):
            if not self._buckets:
                return
            (kind, _), oldest = next(iter(self._buckets.items()))
            if now - oldest.updated < self._limits[kind].refill_s:
                return  # lazy: the rest wait for later requests (max_buckets bounds them anyway)
            self._buckets.popitem(last=False)
