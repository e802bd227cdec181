"""The scheduler loop against an in-memory store and a fake placer, on an injected clock (no sleeps)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from app.errors import InvalidInput, ProviderOutcomeUnknown, TooManyRequests
from app.metrics import REGISTRY
from app.providers.control import LegState
from app.scheduler.loop import Scheduler
from app.scheduler.placing import Reconciliation, Settled
from app.schemas.calls import EndReason
from tests.conftest import make_settings
from tests.unit.fake_batch_store import FakeBatch, FakeBatchStore, FakePlacer

T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class RecordedEvents:
    """The batch events the scheduler recorded, as (batch, type, scheduled call, extras)."""

    seen: list[tuple[str, str, str | None, dict[str, Any]]] = field(default_factory=list)

    def __call__(
        self,
        batch_id: str,
        type: str,
        text: str,
        severity: Any = None,
        extras: dict[str, Any] | None = None,
        *,
        scheduled_call_id: str | None = None,
        call_id: str | None = None,
    ) -> None:
        self.seen.append((batch_id, type, scheduled_call_id, extras or {}))

    def types(self) -> list[str]:
        return [type for _, type, _, _ in self.seen]


@dataclass
class World:
    store: FakeBatchStore
    placer: FakePlacer
    clock: Clock
    scheduler: Scheduler
    legs: dict[str, LegState]
    events: RecordedEvents

    async def run(self, ticks: int, step_s: float = 1.0, end_calls: bool = False) -> None:
        for _ in range(ticks):
            await self.scheduler.tick()
            if end_calls:
                self.placer.end_all()
            self.clock.advance(step_s)


@dataclass
class FakeReconciler:
    """What reconciling an unknown dial answers, and the scheduled calls it was asked about."""

    answer: Reconciliation = field(
        default_factory=lambda: Reconciliation(Settled.UNKNOWN, "the provider is unreachable")
    )
    asked: list[str] = field(default_factory=list)

    async def __call__(self, batch: Any, scheduled: Any) -> Reconciliation:
        self.asked.append(scheduled.id)
        return self.answer


def world(tmp_path: Path, reconciler: FakeReconciler | None = None, **settings: Any) -> World:
    store = FakeBatchStore()
    placer = FakePlacer(store)
    clock = Clock()
    legs: dict[str, LegState] = {}
    events = RecordedEvents()

    async def leg_of(row: Any) -> LegState | None:
        return legs.get(row.id)

    scheduler = Scheduler(
        make_settings(tmp_path, batch_calls_per_minute=6000, **settings),
        store,
        placer,
        placer.live_count,
        leg_of,
        now=clock,
        owner="test",
        reconcile=reconciler or FakeReconciler(),
        record=events,
    )
    return World(store, placer, clock, scheduler, legs, events)


@pytest.fixture
def w(tmp_path: Path) -> World:
    return world(tmp_path)


def statuses(w: World, batch_id: str = "b") -> dict[str, int]:
    found: dict[str, int] = {}
    for call in w.store.of(batch_id):
        found[call.status] = found.get(call.status, 0) + 1
    return found


async def test_no_more_than_max_concurrency_calls_are_live_at_once(w: World) -> None:
    w.store.add(FakeBatch("b", max_concurrency=5), 40, T0)
    await w.scheduler.tick()
    assert w.placer.live_total() == 5
    await w.run(20, end_calls=True)
    assert w.placer.peak_live == 5 and statuses(w) == {"SUCCESS": 40}


async def test_each_dial_is_recorded_before_the_call_is_placed(w: World) -> None:
    w.store.add(FakeBatch("b"), 3, T0)
    await w.scheduler.tick()
    assert w.placer.dial_states == ["dialling"] * 3


async def test_a_placed_call_ends_success_with_its_call_id(w: World) -> None:
    [scheduled] = w.store.add(FakeBatch("b"), 1, T0)
    await w.scheduler.tick()
    assert (scheduled.status, scheduled.call_id) == ("SUCCESS", "call-0")


async def test_calls_per_minute_holds_on_the_clock(w: World) -> None:
    w.store.add(FakeBatch("b", calls_per_minute=6), 20, T0)
    await w.run(61, end_calls=True)
    assert len(w.placer.placed) == 7  # the first at once, then one every 10 s


async def test_a_refused_call_ends_error_with_the_reason(w: World) -> None:
    [scheduled] = w.store.add(FakeBatch("b"), 1, T0)
    w.placer.failures.append(InvalidInput("provider_rejected", "twilio refused +1555"))
    await w.scheduler.tick()
    assert (scheduled.status, scheduled.error) == ("ERROR", "twilio refused +1555")


async def test_a_429_puts_the_call_back_until_retry_after_and_dials_it_once_later(w: World) -> None:
    [scheduled] = w.store.add(FakeBatch("b"), 1, T0)
    w.placer.failures.append(TooManyRequests("provider_rate_limited", "429", retry_after_s=30))
    await w.scheduler.tick()
    assert (scheduled.status, scheduled.next_attempt_at) == ("FUTURE", T0 + timedelta(seconds=30))
    await w.run(29)
    assert w.placer.placed == []
    await w.run(3)
    assert w.placer.placed == [(scheduled.id, "call-0")] and scheduled.status == "SUCCESS"


async def test_a_429_slows_the_batch_down(w: World) -> None:
    w.store.add(FakeBatch("b", calls_per_minute=60), 100, T0)
    w.placer.failures.append(TooManyRequests("provider_rate_limited", "429", retry_after_s=1))
    await w.run(41, end_calls=True)
    assert len(w.placer.placed) <= 21


async def test_every_slot_taken_puts_the_call_back_without_slowing_the_batch(w: World) -> None:
    [scheduled, *_] = w.store.add(FakeBatch("b"), 2, T0)
    w.placer.failures.append(TooManyRequests("too_many_calls", "full", retry_after_s=5))
    await w.scheduler.tick()
    assert scheduled.status == "FUTURE" and w.scheduler.paces["b"].slow_until is None


async def test_the_window_end_expires_what_is_left(w: World) -> None:
    w.store.add(FakeBatch("b", window_end=T0 + timedelta(seconds=3), calls_per_minute=60), 10, T0)
    await w.run(5, end_calls=True)
    assert statuses(w) == {"SUCCESS": 3, "EXPIRED": 7}


async def test_a_batch_waits_for_its_window_start(w: World) -> None:
    w.store.add(FakeBatch("b", window_start=T0 + timedelta(seconds=10)), 1, T0)
    await w.run(10)
    assert w.placer.placed == []
    await w.run(1)
    assert len(w.placer.placed) == 1


async def test_pausing_stops_new_dials_and_resuming_continues(w: World) -> None:
    w.store.add(FakeBatch("b", max_concurrency=2), 6, T0)
    await w.scheduler.tick()
    w.store.batches["b"].paused = True
    await w.run(5, end_calls=True)
    assert len(w.placer.placed) == 2
    w.store.batches["b"].paused = False
    await w.run(5, end_calls=True)
    assert statuses(w) == {"SUCCESS": 6}


async def test_deleting_stops_new_dials_and_keeps_live_calls(w: World) -> None:
    w.store.add(FakeBatch("b", max_concurrency=2), 6, T0)
    await w.scheduler.tick()
    w.store.batches["b"].deleted = True
    await w.run(5)
    assert len(w.placer.placed) == 2 and w.placer.live_total() == 2


async def test_reserved_incoming_slots_are_left_free(tmp_path: Path) -> None:
    w = world(tmp_path, max_concurrent_calls=4, reserved_incoming_calls=1)
    w.store.add(FakeBatch("b"), 10, T0)
    await w.run(3)
    assert w.placer.live_total() == 3


async def test_two_batches_share_the_service_slots(tmp_path: Path) -> None:
    w = world(tmp_path, max_concurrent_calls=4, reserved_incoming_calls=1)
    w.store.add(FakeBatch("a"), 10, T0)
    w.store.add(FakeBatch("b"), 10, T0)
    await w.run(3)
    assert w.placer.live_total() == 3


def ended_call(w: World, scheduled_id: str, call_id: str, leg: LegState) -> Any:
    w.legs[call_id] = leg
    return SimpleNamespace(id=call_id, agent_id="agent-1", scheduled_call_id=scheduled_id, batch_id="b")


async def test_a_busy_call_is_dialled_again_after_the_backoff_as_a_new_call(w: World) -> None:
    [scheduled] = w.store.add(FakeBatch("b", retry={"maxAttempts": 2, "backoff": "60s"}), 1, T0)
    await w.scheduler.tick()
    w.placer.end_all()
    retried = await w.scheduler.retry_if_due(
        ended_call(w, scheduled.id, "call-0", LegState.BUSY), EndReason.UNJOINED
    )
    assert retried and (scheduled.status, scheduled.attempts) == ("FUTURE", 1)
    assert scheduled.next_attempt_at == T0 + timedelta(seconds=60)
    await w.run(62)
    assert w.placer.placed == [(scheduled.id, "call-0"), (scheduled.id, "call-1")]


async def test_no_retry_once_max_attempts_were_dialled(w: World) -> None:
    [scheduled] = w.store.add(FakeBatch("b", retry={"maxAttempts": 1, "backoff": "60s"}), 1, T0)
    await w.scheduler.tick()
    ended = ended_call(w, scheduled.id, "call-0", LegState.NO_ANSWER)
    assert not await w.scheduler.retry_if_due(ended, EndReason.UNJOINED)
    assert scheduled.status == "SUCCESS"


async def test_a_batch_without_retry_policy_does_not_redial(w: World) -> None:
    [scheduled] = w.store.add(FakeBatch("b"), 1, T0)
    await w.scheduler.tick()
    ended = ended_call(w, scheduled.id, "call-0", LegState.BUSY)
    assert not await w.scheduler.retry_if_due(ended, EndReason.UNJOINED)


async def test_an_earlier_attempts_end_does_not_retry_the_latest(w: World) -> None:
    [scheduled] = w.store.add(FakeBatch("b", retry={"maxAttempts": 3, "backoff": "1s"}), 1, T0)
    await w.scheduler.tick()
    ended = ended_call(w, scheduled.id, "call-old", LegState.BUSY)
    assert not await w.scheduler.retry_if_due(ended, EndReason.UNJOINED)


async def test_a_deleted_batch_does_not_redial(w: World) -> None:
    [scheduled] = w.store.add(FakeBatch("b", retry={"maxAttempts": 3, "backoff": "1s"}), 1, T0)
    await w.scheduler.tick()
    w.store.batches["b"].deleted = True
    ended = ended_call(w, scheduled.id, "call-0", LegState.BUSY)
    assert not await w.scheduler.retry_if_due(ended, EndReason.UNJOINED)


async def test_a_claim_whose_lease_was_lost_is_not_dialled(w: World) -> None:
    [scheduled] = w.store.add(FakeBatch("b"), 1, T0)
    claimed = await w.store.claim_due("b", T0, "someone-else", 30, 1)
    await w.scheduler._dial(w.store.batches["b"], claimed[0], T0)
    assert w.placer.placed == [] and scheduled.lease_owner == "someone-else"


# --- a dial a stopped instance left unknown ------------------------------------------------------------

LEASE = 5.0


async def left_dialling(w: World, window_end: datetime | None = None) -> Any:
    """A call an instance claimed and marked dialling, then stopped; the clock past its lease."""
    [scheduled] = w.store.add(FakeBatch("b", window_end=window_end), 1, T0)
    await w.store.claim_due("b", T0, "crashed", LEASE, 1)
    assert await w.store.mark_dialling(scheduled.id, "crashed")
    w.clock.advance(LEASE)
    return scheduled


def settling(tmp_path: Path, outcome: Settled, call_id: str | None = None) -> World:
    return world(tmp_path, FakeReconciler(Reconciliation(outcome, "test", call_id)), batch_lease=LEASE)


async def test_a_dial_the_provider_lists_is_recorded_success_and_not_dialled_again(tmp_path: Path) -> None:
    w = settling(tmp_path, Settled.DIALLED, "call-crashed")
    scheduled = await left_dialling(w)
    await w.scheduler.tick()
    assert w.placer.placed == []
    assert (scheduled.status, scheduled.call_id) == ("SUCCESS", "call-crashed")


async def test_a_dial_that_provably_never_went_out_is_dialled_once_as_one_attempt(tmp_path: Path) -> None:
    w = settling(tmp_path, Settled.NOT_DIALLED)
    scheduled = await left_dialling(w)
    await w.run(3)
    assert w.placer.placed == [(scheduled.id, "call-0")]
    assert (scheduled.status, scheduled.attempts) == ("SUCCESS", 1)


async def test_a_dial_the_provider_cannot_settle_ends_error_outcome_unknown(tmp_path: Path) -> None:
    w = settling(tmp_path, Settled.UNKNOWN)
    scheduled = await left_dialling(w)
    await w.run(3)
    assert w.placer.placed == []
    assert scheduled.status == "ERROR" and scheduled.error.startswith("outcome unknown")


async def test_a_dial_is_not_reconciled_while_its_lease_holds(tmp_path: Path) -> None:
    reconciler = FakeReconciler()
    w = world(tmp_path, reconciler, batch_lease=LEASE)
    [scheduled] = w.store.add(FakeBatch("b"), 1, T0)
    await w.store.claim_due("b", T0, "slow", LEASE, 1)
    assert await w.store.mark_dialling(scheduled.id, "slow")
    w.clock.advance(LEASE - 1)
    await w.scheduler.tick()
    assert reconciler.asked == [] and scheduled.status == "PENDING"


async def test_an_unknown_dial_is_settled_after_the_window_ended(tmp_path: Path) -> None:
    w = settling(tmp_path, Settled.DIALLED, "call-crashed")
    scheduled = await left_dialling(w, window_end=T0 + timedelta(seconds=1))
    await w.scheduler.tick()
    assert scheduled.status == "SUCCESS"


async def test_an_unknown_dial_that_never_went_out_expires_once_the_window_ended(tmp_path: Path) -> None:
    w = settling(tmp_path, Settled.NOT_DIALLED)
    scheduled = await left_dialling(w, window_end=T0 + timedelta(seconds=1))
    await w.run(2)
    assert w.placer.placed == [] and scheduled.status == "EXPIRED"


async def test_a_dial_without_a_clear_answer_is_left_dialling_for_reconciliation(tmp_path: Path) -> None:
    w = world(tmp_path, batch_lease=LEASE)
    [scheduled] = w.store.add(FakeBatch("b"), 1, T0)
    w.placer.failures.append(ProviderOutcomeUnknown("provider_outcome_unknown", "ReadError"))
    await w.scheduler.tick()
    assert (scheduled.status, scheduled.dial_state, scheduled.attempts) == ("PENDING", "dialling", 1)


async def test_a_dial_without_a_clear_answer_that_never_went_out_is_dialled_once_after_the_lease(
    tmp_path: Path,
) -> None:
    reconciler = FakeReconciler(Reconciliation(Settled.NOT_DIALLED, "not in the provider's list"))
    w = world(tmp_path, reconciler, batch_lease=LEASE)
    [scheduled] = w.store.add(FakeBatch("b"), 1, T0)
    w.placer.failures.append(ProviderOutcomeUnknown("provider_outcome_unknown", "ReadError"))
    await w.run(int(LEASE) + 2)
    assert reconciler.asked == [scheduled.id]
    assert w.placer.placed == [(scheduled.id, "call-0")] and scheduled.status == "SUCCESS"


def metric(name: str, outcome: str) -> float:
    return REGISTRY.get_sample_value(f"{name}_total", {"outcome": outcome}) or 0.0


async def test_dials_are_counted_by_outcome_in_the_metrics(w: World) -> None:
    before = {o: metric("callbridge_batch_dials", o) for o in ("dialled", "refused", "put_back")}
    w.store.add(FakeBatch("b"), 3, T0)
    w.placer.failures.append(InvalidInput("provider_rejected", "twilio refused +1555"))
    w.placer.failures.append(TooManyRequests("provider_rate_limited", "429", retry_after_s=30))
    await w.scheduler.tick()
    after = {o: metric("callbridge_batch_dials", o) - before[o] for o in before}
    assert after == {"dialled": 1, "refused": 1, "put_back": 1}


async def test_an_unknown_dial_is_counted_by_what_reconciling_it_found(tmp_path: Path) -> None:
    before = metric("callbridge_batch_unknown_dials", "dialled")
    w = settling(tmp_path, Settled.DIALLED, "call-crashed")
    await left_dialling(w)
    await w.scheduler.tick()
    assert metric("callbridge_batch_unknown_dials", "dialled") == before + 1


async def test_nothing_is_dialled_while_the_service_refuses_calls(w: World) -> None:
    refusing = True
    w.scheduler.refusing_calls = lambda: refusing  # draining, or the cluster's Redis unreachable
    w.store.add(FakeBatch("b"), 3, T0)
    assert await w.scheduler.tick() == 0
    assert w.placer.dial_states == []
    refusing = False
    assert await w.scheduler.tick() == 3
