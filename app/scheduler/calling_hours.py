"""Calling hours: a scheduled call is dialled only inside its daily hours, local to its timezone.

A call's `callingHours` and `timezone` (its spec) override its batch's. The first dial is due when the
hours first open after the window starts (set as the call is stored); a call claimed outside them (a
retry's backoff, a lease taken over at night) is put back until they open again, without a dial.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from app.schemas.batches import CallingHours


@dataclass(frozen=True)
class LocalHours:
    """Daily hours [start, end) in `zone`."""

    start: time
    end: time
    zone: ZoneInfo

    def opens_at(self, at: datetime) -> datetime:
        """`at` itself when it falls inside the hours, else the next moment they open (in `at`'s zone).

        A start that a daylight-saving change skips that day (02:30 on the spring-forward night) opens at
        the same instant an hour on, as zoneinfo maps the missing local time."""
        local = at.astimezone(self.zone)
        if self.start <= local.time() < self.end:
            return at
        day = local.date() if local.time() < self.start else local.date() + timedelta(days=1)
        return datetime.combine(day, self.start, tzinfo=self.zone).astimezone(at.tzinfo)


class TimezoneRequired(ValueError):
    """Calling hours apply to a call that has no timezone, nor its batch."""


def calling_hours_and_zone(
    call_hours: Any, call_zone: str | None, batch_hours: Any, batch_zone: str | None
) -> tuple[Any, str] | None:
    """The hours and timezone a call is dialled by: its own where it has them, else its batch's (None: any
    time of day). TimezoneRequired when there are hours and no timezone. The one place the rule lives: the
    API checks a batch with it, the scheduler dials by it."""
    hours = call_hours or batch_hours
    if hours is None:
        return None
    zone = call_zone or batch_zone
    if zone is None:
        raise TimezoneRequired("callingHours need a timezone: on the call or on the batch")
    return hours, zone


def hours_of(
    spec: Mapping[str, Any], batch_hours: Mapping[str, Any] | None, batch_zone: str | None
) -> LocalHours | None:
    """The calling hours of a stored call spec in its batch (None: any time of day)."""
    chosen = calling_hours_and_zone(spec.get("callingHours"), spec.get("timezone"), batch_hours, batch_zone)
    if chosen is None:
        return None
    hours = CallingHours.model_validate(chosen[0])
    return LocalHours(hours.start, hours.end, ZoneInfo(chosen[1]))
