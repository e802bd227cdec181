"""The scheduler's pure parts: the pace (token bucket, 429 slow-down), the capacity rule, the retry policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.providers.control import LegState
from app.scheduler.capacity import ServiceRoom, batch_room, dial_capacity
from app.scheduler.pacing import SLOWDOWN_S, Pace
from app.scheduler.retry import RetryPolicy
from app.schemas.calls import EndReason

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def dials_over(pace: Pace, seconds: int, step: float = 1.0) -> int:
    """Dials the pace allows from 0 s to `seconds` s when every allowed dial is made, a tick per `step` s."""
    made = 0
    for tick in range(int(seconds / step) + 1):
        now = at(tick * step)
        allowed = pace.available(now)
        pace.take(now, allowed)
        made += allowed
    return made


# --- pace ---------------------------------------------------------------------------------------


def test_a_new_pace_allows_one_seconds_dials_at_once() -> None:
    assert (Pace(6).available(T0), Pace(600).available(T0)) == (1, 10)


@pytest.mark.parametrize("per_minute", [6, 30, 60, 120, 600])
def test_calls_per_minute_holds_over_ten_minutes(per_minute: int) -> None:
    made = dials_over(Pace(per_minute), 600)
    start = max(1, per_minute // 60)  # what a new pace starts with
    assert per_minute * 10 <= made <= per_minute * 10 + start


def test_a_pace_saves_up_no_more_than_one_seconds_dials() -> None:
    pace = Pace(600)
    pace.take(T0, pace.available(T0))
    assert pace.available(at(3600)) == 10


def test_dials_given_back_can_be_made_later() -> None:
    pace = Pace(60)
    pace.take(T0, 1)
    pace.give_back(1)
    assert pace.available(T0) == 1


def test_a_429_allows_nothing_until_its_retry_after() -> None:
    pace = Pace(600)
    pace.slow_down(T0, retry_after_s=30)
    assert pace.available(at(29)) == 0


def test_after_a_429_the_pace_is_halved_for_a_while() -> None:
    pace = Pace(60)
    pace.slow_down(T0, retry_after_s=10)
    made = sum(_take_all(pace, at(10 + s)) for s in range(1, 41))
    assert made == 20


def test_the_full_pace_returns_once_the_slow_down_ends() -> None:
    pace = Pace(60)
    pace.slow_down(T0, retry_after_s=10)
    end = 10 + SLOWDOWN_S
    _take_all(pace, at(end))
    assert sum(_take_all(pace, at(end + s)) for s in range(1, 21)) == 20


def _take_all(pace: Pace, now: datetime) -> int:
    allowed = pace.available(now)
    pace.take(now, allowed)
    return allowed


# --- capacity -----------------------------------------------------------------------------------


def test_a_batch_may_add_its_max_concurrency_minus_its_live_calls() -> None:
    assert batch_room(5, live=3) == 2


def test_a_batch_at_its_max_concurrency_may_add_none() -> None:
    assert batch_room(5, live=7) == 0


def test_a_batch_without_max_concurrency_is_not_limited_by_it() -> None:
    assert batch_room(None, live=100) is None


def test_batches_leave_the_reserved_incoming_slots_free() -> None:
    assert ServiceRoom(max_concurrent=4, reserved_incoming=1, live=0).free() == 3


def test_incoming_calls_beyond_the_reserve_take_batch_slots() -> None:
    assert ServiceRoom(max_concurrent=4, reserved_incoming=1, live=3).free() == 0


def test_without_a_service_limit_there_is_no_service_room_limit() -> None:
    assert ServiceRoom(max_concurrent=0, reserved_incoming=1, live=50).free() is None


def test_the_capacity_is_the_smallest_limit_that_applies() -> None:
    assert dial_capacity(None, 3, 7, None) == 3


# --- retry policy -------------------------------------------------------------------------------


POLICY = RetryPolicy.from_json({"maxAttempts": 3, "backoff": "120s"})


def test_a_retry_policy_reads_its_backoff_as_a_duration() -> None:
    assert RetryPolicy(3, timedelta(seconds=120)) == POLICY


def test_a_batch_without_retry_has_no_policy() -> None:
    assert RetryPolicy.from_json(None) is None


@pytest.mark.parametrize("leg", [LegState.BUSY, LegState.NO_ANSWER])
def test_busy_and_no_answer_are_dialled_again_while_attempts_remain(leg: LegState) -> None:
    assert POLICY is not None and POLICY.wants_another(2, EndReason.UNJOINED, leg)


def test_no_more_dials_once_max_attempts_were_made() -> None:
    assert POLICY is not None and not POLICY.wants_another(3, EndReason.UNJOINED, LegState.BUSY)


@pytest.mark.parametrize("leg", [LegState.FAILED, LegState.COMPLETED, LegState.CANCELED, None])
def test_other_unanswered_ends_are_not_retried(leg: LegState | None) -> None:
    assert POLICY is not None and not POLICY.wants_another(1, EndReason.UNJOINED, leg)


def test_an_answered_call_is_not_retried() -> None:
    assert POLICY is not None and not POLICY.wants_another(1, EndReason.HANGUP, LegState.BUSY)
