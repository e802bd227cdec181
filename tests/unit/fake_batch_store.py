"""An in-memory BatchRepository as the contract (/work/notes/batches_api.md) describes it, and a fake
placer standing in for create-and-dial, so the scheduler loop is tested without a database or provider."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from app.errors import ServiceError
from app.scheduler.store import Expiry


@dataclass
class FakeBatch:
    id: str
    agent_id: str = "agent-1"
    window_start: datetime | None = None
    window_end: datetime | None = None
    paused: bool = False
    deleted: bool = False
    max_concurrency: int | None = None
    calls_per_minute: float | None = None
    retry: dict[str, Any] | None = None
    timezone: str | None = None
    calling_hours: dict[str, str] | None = None
    ended_at: datetime | None = None


@dataclass
class FakeScheduledCall:
    id: str
    batch_id: str
    position: int
    next_attempt_at: datetime
    spec: dict[str, Any] = field(default_factory=dict)
    status: str = "FUTURE"
    attempts: int = 0
    lease_owner: str | None = None
    lease_expires: datetime | None = None
    dial_state: str = "none"
    dial_started: datetime | None = None
    call_id: str | None = None
    error: str | None = None


class FakeBatchStore:
    def __init__(self) -> None:
        self.batches: dict[str, FakeBatch] = {}
        self.calls: dict[str, FakeScheduledCall] = {}
        #: Calls created and not ended, by batch (the calls table's view).
        self.live: dict[str, set[str]] = {}

    def add(self, batch: FakeBatch, count: int, now: datetime) -> list[FakeScheduledCall]:
        self.batches[batch.id] = batch
        self.live[batch.id] = set()
        made = [FakeScheduledCall(f"{batch.id}-{i}", batch.id, i, now) for i in range(count)]
        self.calls.update({c.id: c for c in made})
        return made

    def of(self, batch_id: str, status: str | None = None) -> list[FakeScheduledCall]:
        return [c for c in self.calls.values() if c.batch_id == batch_id and status in (None, c.status)]

    async def active_batches(self, now: datetime) -> list[FakeBatch]:
        return [
            b
            for b in self.batches.values()
            if not (b.deleted or b.paused or b.ended_at) and (b.window_start is None or b.window_start <= now)
        ]

    async def get(self, agent_id: str, batch_id: str) -> FakeBatch | None:
        batch = self.batches.get(batch_id)
        return batch if batch and batch.agent_id == agent_id and not batch.deleted else None

    async def get_call(self, scheduled_call_id: str) -> FakeScheduledCall | None:
        return self.calls.get(scheduled_call_id)

    async def claim_due(
        self,
        batch_id: str,
        now: datetime,
        owner: str,
        lease_s: float,
        limit: int,
        *,
        unknown_only: bool = False,
    ) -> list[FakeScheduledCall]:
        def due(c: FakeScheduledCall) -> bool:
            if c.status == "FUTURE":
                return c.next_attempt_at <= now and not unknown_only
            lapsed = c.lease_expires is not None and c.lease_expires <= now
            states = ("dialling",) if unknown_only else ("none", "dialling")
            return c.status == "PENDING" and c.dial_state in states and lapsed

        claimed = list(itertools.islice(filter(due, self.of(batch_id)), limit))
        for c in claimed:
            c.status, c.lease_owner, c.lease_expires = "PENDING", owner, now + timedelta(seconds=lease_s)
        return claimed

    async def mark_dialling(self, call_id: str, owner: str) -> bool:
        c = self.calls[call_id]
        if c.lease_owner != owner or c.dial_state != "none":
            return False
        c.dial_state, c.dial_started = "dialling", datetime.now()
        c.attempts += 1  # as BatchRepository counts them: one per dial
        return True

    async def not_dialled(self, call_id: str, owner: str) -> bool:
        c = self.calls[call_id]
        if c.lease_owner != owner or c.dial_state != "dialling" or c.status != "PENDING":
            return False
        c.dial_state, c.dial_started, c.attempts = "none", None, c.attempts - 1
        return True

    async def finish(
        self, call_id: str, status: str, *, created_call_id: str | None = None, error: str | None = None
    ) -> dict[str, int] | None:
        c = self.calls[call_id]
        c.status, c.error, c.dial_state = status, error, "dialled" if created_call_id else c.dial_state
        c.call_id = created_call_id or c.call_id
        return self._end_batch_if_done(c.batch_id)

    async def retry_later(self, call_id: str, at: datetime, attempts: int) -> None:
        c = self.calls[call_id]
        c.status, c.next_attempt_at, c.attempts, c.dial_state = "FUTURE", at, attempts, "none"
        c.lease_owner = c.lease_expires = None
        self.batches[c.batch_id].ended_at = None

    async def expire_unstarted(self, batch_id: str, now: datetime) -> Expiry:
        batch = self.batches[batch_id]
        if batch.window_end is None or now < batch.window_end:
            return Expiry(0, None)
        expired = self.of(batch_id, "FUTURE")
        for c in expired:
            c.status = "EXPIRED"
        return Expiry(len(expired), self._end_batch_if_done(batch_id))

    async def live_calls(self, batch_id: str) -> int:
        return len(self.live[batch_id])

    async def queue_depth(self, batch_ids: Sequence[str]) -> dict[str, int]:
        unfinished = [c for b in batch_ids for c in self.of(b) if c.status in ("FUTURE", "PENDING")]
        return {status: sum(c.status == status for c in unfinished) for status in ("FUTURE", "PENDING")}

    def _end_batch_if_done(self, batch_id: str) -> dict[str, int] | None:
        batch = self.batches[batch_id]
        if batch.ended_at is not None or any(c.status in ("FUTURE", "PENDING") for c in self.of(batch_id)):
            return None
        batch.ended_at = datetime.max
        return {s: len(self.of(batch_id, s)) for s in ("SUCCESS", "ERROR", "EXPIRED")}


@dataclass
class FakePlacer:
    """Creates a 'call' for each scheduled call (live until `end`), or raises what it was told to."""

    store: FakeBatchStore
    failures: list[ServiceError] = field(default_factory=list)
    placed: list[tuple[str, str]] = field(default_factory=list)  # (scheduled call, call id)
    peak_live: int = 0
    dial_states: list[str] = field(default_factory=list)  # each scheduled call's, as it was placed

    async def __call__(self, batch: Any, scheduled: Any) -> str:
        self.dial_states.append(self.store.calls[scheduled.id].dial_state)
        if self.failures:
            raise self.failures.pop(0)
        call_id = f"call-{len(self.placed)}"
        self.placed.append((scheduled.id, call_id))
        self.store.live[batch.id].add(call_id)
        self.peak_live = max(self.peak_live, self.live_total())
        return call_id

    def live_total(self) -> int:
        return sum(len(calls) for calls in self.store.live.values())

    def end_all(self) -> None:
        for calls in self.store.live.values():
            calls.clear()

    async def live_count(self) -> int:
        return self.live_total()
