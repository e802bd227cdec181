"""How many calls a batch may start now: its own maxConcurrency, and the service's share left for batches."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServiceRoom:
    """Service-wide call slots: CALLBRIDGE_MAX_CONCURRENT_CALLS (0: no limit) minus the live calls, of
    which CALLBRIDGE_RESERVED_INCOMING_CALLS are never taken by batches."""

    max_concurrent: int
    reserved_incoming: int
    live: int

    def free(self) -> int | None:
        """Slots batches may take now; None when the service has no limit."""
        if not self.max_concurrent:
            return None
        return max(0, self.max_concurrent - self.reserved_incoming - self.live)


def batch_room(max_concurrency: int | None, live: int) -> int | None:
    """Calls the batch may add to its `live` ones; None when it has no maxConcurrency."""
    if max_concurrency is None:
        return None
    return max(0, max_concurrency - live)


def dial_capacity(*limits: int | None) -> int:
    """The smallest of the limits that apply (None: that one does not limit); at least one must be set."""
    applying = [limit for limit in limits if limit is not None]
    if not applying:
        raise ValueError("at least one limit must apply (the pace always does)")
    return min(applying)
