"""Calling hours in a call's own timezone: when a dial may go out, across midnight and daylight saving."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from app.scheduler.calling_hours import LocalHours, TimezoneRequired, hours_of

NEW_YORK = ZoneInfo("America/New_York")
NINE_TO_EIGHT = LocalHours(time(9), time(20), NEW_YORK)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_moment_inside_the_hours_is_dialled_at_once() -> None:
    assert NINE_TO_EIGHT.opens_at(utc(2026, 12, 2, 15)) == utc(2026, 12, 2, 15)  # 10:00 in New York


def test_before_the_hours_open_the_call_waits_for_that_morning() -> None:
    assert NINE_TO_EIGHT.opens_at(utc(2026, 12, 2, 12)) == utc(2026, 12, 2, 14)  # 07:00 → 09:00 EST


def test_at_closing_time_the_call_waits_for_the_next_morning() -> None:
    assert NINE_TO_EIGHT.opens_at(utc(2026, 12, 3, 1)) == utc(2026, 12, 3, 14)  # 20:00 EST → 09:00


def test_the_hours_are_local_so_a_utc_midnight_can_be_inside_them() -> None:
    assert NINE_TO_EIGHT.opens_at(utc(2026, 12, 3, 0, 30)) == utc(2026, 12, 3, 0, 30)  # 19:30 EST


def test_after_daylight_saving_begins_the_hours_open_an_hour_earlier_in_utc() -> None:
    assert NINE_TO_EIGHT.opens_at(utc(2026, 3, 7, 12)) == utc(2026, 3, 7, 14)  # EST, the day before
    assert NINE_TO_EIGHT.opens_at(utc(2026, 3, 8, 11)) == utc(2026, 3, 8, 13)  # EDT


def test_a_start_skipped_by_the_spring_forward_opens_an_hour_on() -> None:
    hours = LocalHours(time(2, 30), time(20), NEW_YORK)  # 02:30 does not exist on 2026-03-08
    assert hours.opens_at(utc(2026, 3, 8, 5)) == utc(2026, 3, 8, 7, 30)  # 03:30 EDT


def test_a_call_s_own_hours_and_timezone_override_the_batch_s() -> None:
    spec = {"timezone": "Asia/Tokyo", "callingHours": {"start": "10:00", "end": "12:00"}}
    hours = hours_of(spec, {"start": "09:00", "end": "20:00"}, "Europe/Paris")
    assert hours == LocalHours(time(10), time(12), ZoneInfo("Asia/Tokyo"))


def test_a_call_without_its_own_takes_the_batch_s() -> None:
    hours = hours_of({}, {"start": "09:00", "end": "20:00"}, "Europe/Paris")
    assert hours == LocalHours(time(9), time(20), ZoneInfo("Europe/Paris"))


def test_no_calling_hours_means_any_time() -> None:
    assert hours_of({"timezone": "Europe/Paris"}, None, None) is None


def test_calling_hours_without_a_timezone_are_an_error() -> None:
    with pytest.raises(TimezoneRequired):
        hours_of({}, {"start": "09:00", "end": "20:00"}, None)
