"""The scheduler keeps calls inside their calling hours and records what it does as batch events
(an in-memory store, a fake placer and an injected clock, as in test_scheduler_loop)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from app.errors import InvalidInput, TooManyRequests
from app.metrics import REGISTRY
from app.providers.control import LegState
from app.scheduler.placing import Settled, call_request
from app.schemas.calls import EndReason
from tests.unit.fake_batch_store import FakeBatch
from tests.unit.test_scheduler_loop import T0, World, ended_call, left_dialling, settling, world

#: T0 is 09:00 UTC: 04:00 in New York (EST), so New York's 09:00-20:00 opens at 14:00 UTC.
NEW_YORK_HOURS = {"timezone": "America/New_York", "callingHours": {"start": "09:00", "end": "20:00"}}
OPENS = T0 + timedelta(hours=5)


@pytest.fixture
def w(tmp_path: Path) -> World:
    return world(tmp_path)


def add_new_york_call(w: World, **batch: object) -> object:
    [scheduled] = w.store.add(FakeBatch("b", **batch), 1, T0)
    scheduled.spec = dict(NEW_YORK_HOURS)
    return scheduled


async def test_a_call_claimed_outside_its_hours_is_put_back_until_they_open_without_a_dial(w: World) -> None:
    scheduled = add_new_york_call(w)
    await w.scheduler.tick()
    assert w.placer.placed == []
    assert (scheduled.status, scheduled.next_attempt_at, scheduled.attempts) == ("FUTURE", OPENS, 0)


async def test_a_call_is_dialled_once_its_hours_open(w: World) -> None:
    scheduled = add_new_york_call(w)
    await w.scheduler.tick()
    w.clock.now = OPENS
    await w.scheduler.tick()
    assert w.placer.placed == [(scheduled.id, "call-0")]


async def test_the_batch_s_hours_apply_to_calls_without_their_own(w: World) -> None:
    w.store.add(
        FakeBatch("b", timezone="Asia/Tokyo", calling_hours={"start": "09:00", "end": "17:00"}), 2, T0
    )
    await w.scheduler.tick()  # 18:00 in Tokyo
    assert w.placer.placed == []


async def test_a_call_put_back_for_its_hours_gives_its_dial_back_to_the_pace(w: World) -> None:
    new_york, other = w.store.add(FakeBatch("b", calls_per_minute=60), 2, T0)  # a pace of one dial a second
    new_york.spec = dict(NEW_YORK_HOURS)
    await w.scheduler.tick()  # claims the New York call with the one dial there is, and puts it back
    await w.scheduler.tick()  # the same instant: only the dial given back lets the other call go
    assert w.placer.placed == [(other.id, "call-0")]


async def test_a_retry_whose_backoff_ends_after_hours_waits_for_the_next_opening(w: World) -> None:
    scheduled = add_new_york_call(w, retry={"maxAttempts": 2, "backoff": "3600s"})
    w.clock.now = T0 + timedelta(hours=15)  # 19:00 in New York: the retry would fall at 20:00
    await w.scheduler.tick()
    assert await w.scheduler.retry_if_due(
        ended_call(w, scheduled.id, "call-0", LegState.NO_ANSWER), EndReason.UNJOINED
    )
    assert scheduled.next_attempt_at == OPENS + timedelta(days=1)


async def test_a_call_whose_hours_open_only_after_the_window_expires_at_its_end(w: World) -> None:
    scheduled = add_new_york_call(w, window_end=T0 + timedelta(hours=1))  # the window ends 05:00 in New York
    await w.scheduler.tick()
    w.clock.now = T0 + timedelta(hours=1)
    await w.scheduler.tick()
    assert scheduled.status == "EXPIRED" and w.placer.placed == []


async def test_a_call_stored_with_hours_and_no_timezone_ends_error(w: World) -> None:
    [scheduled] = w.store.add(FakeBatch("b", calling_hours={"start": "09:00", "end": "20:00"}), 1, T0)
    await w.scheduler.tick()
    assert scheduled.status == "ERROR" and "timezone" in scheduled.error and w.placer.placed == []


def test_a_call_s_timezone_and_hours_are_not_part_of_the_call_it_makes() -> None:
    medium = {"twilio": {"outgoing": {"to": "+15550001", "from": "+15550002"}}}
    request = call_request({"medium": medium, "metadata": {"n": "1"}, **NEW_YORK_HOURS})
    assert request.medium is not None and request.metadata == {"n": "1"}


# --- batch events -------------------------------------------------------------------------------------


async def test_a_dial_is_a_batch_event_of_its_call(w: World) -> None:
    [scheduled] = w.store.add(FakeBatch("b"), 1, T0)
    await w.scheduler.tick()
    assert w.events.seen[0] == ("b", "call_dialled", scheduled.id, {"attempt": 1})


async def test_the_batch_s_end_is_its_last_event_with_its_fates(w: World) -> None:
    w.store.add(FakeBatch("b"), 2, T0)
    w.placer.failures.append(InvalidInput("provider_rejected", "twilio refused +1555"))
    await w.scheduler.tick()
    assert w.events.seen[-1] == ("b", "batch_ended", None, {"SUCCESS": 1, "ERROR": 1, "EXPIRED": 0})
    assert w.events.types().count("batch_ended") == 1


async def test_a_refused_call_is_a_batch_event(w: World) -> None:
    w.store.add(FakeBatch("b"), 1, T0)
    w.placer.failures.append(InvalidInput("provider_rejected", "twilio refused +1555"))
    await w.scheduler.tick()
    assert w.events.types() == ["call_failed", "batch_ended"]


async def test_a_429_is_a_batch_event_saying_until_when(w: World) -> None:
    w.store.add(FakeBatch("b"), 1, T0)
    w.placer.failures.append(TooManyRequests("provider_rate_limited", "429", retry_after_s=30))
    await w.scheduler.tick()
    [(_, kind, _, extras)] = w.events.seen
    assert kind == "call_put_back"
    assert extras == {"code": "provider_rate_limited", "until": (T0 + timedelta(seconds=30)).isoformat()}


async def test_calls_expired_by_the_window_are_one_event_with_their_count(w: World) -> None:
    w.store.add(FakeBatch("b", window_end=T0 + timedelta(seconds=1), paused=True), 4, T0)
    w.store.batches["b"].paused = False
    w.clock.advance(2)
    await w.scheduler.tick()
    assert w.events.seen[0] == ("b", "calls_expired", None, {"count": 4})


async def test_a_reconciled_dial_is_a_batch_event(tmp_path: Path) -> None:
    w = settling(tmp_path, Settled.DIALLED, "call-crashed")
    scheduled = await left_dialling(w)
    await w.scheduler.tick()
    assert w.events.seen[0] == ("b", "dial_reconciled", scheduled.id, {"outcome": "dialled"})


async def test_a_retry_is_a_batch_event(w: World) -> None:
    [scheduled] = w.store.add(FakeBatch("b", retry={"maxAttempts": 2, "backoff": "60s"}), 1, T0)
    await w.scheduler.tick()
    await w.scheduler.retry_if_due(ended_call(w, scheduled.id, "call-0", LegState.BUSY), EndReason.UNJOINED)
    assert w.events.types() == ["call_dialled", "batch_ended", "call_retry_scheduled"]


async def test_the_queue_depth_gauge_counts_calls_still_to_dial(w: World) -> None:
    w.store.add(FakeBatch("b", max_concurrency=2), 5, T0)
    await w.scheduler.tick()
    assert REGISTRY.get_sample_value("callbridge_batch_queue_depth", {"status": "FUTURE"}) == 3
    assert REGISTRY.get_sample_value("callbridge_batch_queue_depth", {"status": "PENDING"}) == 0
