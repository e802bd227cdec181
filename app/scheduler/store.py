"""What the scheduler needs from the store (BatchRepository implements it; tests use a fake)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from app.schemas.calls import EventSeverity

#: A batch's calls by final status (SUCCESS, ERROR, EXPIRED), as the store returns them when it ends.
Fates = dict[str, int]


class Expiry(NamedTuple):
    """What expiring a batch's calls did: how many expired, and its fates if that ended the batch."""

    count: int
    ended: Fates | None


class Batch(Protocol):
    """A scheduled batch as the scheduler reads it (ScheduledBatchRow)."""

    id: str
    agent_id: str
    window_end: datetime | None
    paused: bool
    deleted: bool
    max_concurrency: int | None
    calls_per_minute: float | None
    retry: dict[str, Any] | None
    timezone: str | None
    calling_hours: dict[str, str] | None


class ScheduledCall(Protocol):
    """One call of a batch (ScheduledCallRow)."""

    id: str
    batch_id: str
    status: str
    spec: dict[str, Any]
    attempts: int
    call_id: str | None
    dial_state: str
    dial_started: datetime | None


class BatchStore(Protocol):
    """The part of BatchRepository the scheduler uses."""

    async def active_batches(self, now: datetime) -> list[Any]: ...

    async def get_call(self, scheduled_call_id: str) -> Any | None: ...

    async def get(self, agent_id: str, batch_id: str) -> Any | None: ...

    async def claim_due(
        self,
        batch_id: str,
        now: datetime,
        owner: str,
        lease_s: float,
        limit: int,
        *,
        unknown_only: bool = False,
    ) -> list[Any]: ...

    async def mark_dialling(self, call_id: str, owner: str) -> bool: ...

    async def not_dialled(self, call_id: str, owner: str) -> bool: ...

    async def finish(
        self, call_id: str, status: str, *, created_call_id: str | None = None, error: str | None = None
    ) -> Fates | None: ...

    async def retry_later(self, call_id: str, at: datetime, attempts: int) -> None: ...

    async def expire_unstarted(self, batch_id: str, now: datetime) -> Expiry: ...

    async def live_calls(self, batch_id: str) -> int: ...

    async def queue_depth(self, batch_ids: Sequence[str]) -> dict[str, int]: ...


class LiveCount(Protocol):
    """Service-wide live calls (CallRepository.live_count)."""

    async def __call__(self) -> int: ...


class RecordBatchEvent(Protocol):
    """Queues an event of a batch or of one of its calls (CallEventLog.record_batch)."""

    def __call__(
        self,
        batch_id: str,
        type: str,
        text: str,
        severity: EventSeverity = EventSeverity.INFO,
        extras: dict[str, Any] | None = None,
        *,
        scheduled_call_id: str | None = None,
        call_id: str | None = None,
    ) -> None: ...


def ignore_batch_event(*event: Any, **fields: Any) -> None:
    """A scheduler given nowhere to record its batches' events drops them."""
