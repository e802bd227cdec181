"""Scheduled batches of outbound calls (`/api/agents/{agentId}/scheduled_batches`), Ultravox-shaped.

A batch's `calls` are validated one by one (`ScheduledCallSpec`) and stored as their JSON, so a batch of
100,000 calls never becomes 100,000 models at once. Errors with their own code are `PydanticCustomError`s
whose type is that code (`BATCH_ERROR_CODES`), so the API can answer with it.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from app.schemas.base import ApiModel
from app.schemas.calls import EventSeverity, Metadata
from app.schemas.durations import Duration
from app.schemas.media import Medium

#: Validation error types that are also the response's `code`.
BATCH_ERROR_CODES = frozenset(
    {"no_calls", "invalid_window", "sip_password_unsupported", "invalid_timezone", "invalid_calling_hours"}
)
#: The media callbridge dials itself when they have `outgoing`; any other call needs the batch webhook.
DIALLED_MEDIA = frozenset({"twilio", "telnyx", "plivo", "sip"})


class ScheduledCallStatus(StrEnum):
    FUTURE = "FUTURE"
    PENDING = "PENDING"
    SUCCESS = "SUCCESS"
    EXPIRED = "EXPIRED"
    ERROR = "ERROR"


#: A scheduled call in one of these may still be dialled: its batch has not ended.
UNFINISHED = (ScheduledCallStatus.FUTURE, ScheduledCallStatus.PENDING)
#: Where every scheduled call ends.
FINAL_STATUSES = (ScheduledCallStatus.SUCCESS, ScheduledCallStatus.ERROR, ScheduledCallStatus.EXPIRED)
#: A scheduled call that ended in one of these counts in the batch's `completedCount`.
COMPLETED = (ScheduledCallStatus.SUCCESS, ScheduledCallStatus.ERROR)


class DialState(StrEnum):
    """What is known of a claimed call's dial: recorded before (`dialling`) and after (`dialled`) it."""

    NONE = "none"
    DIALLING = "dialling"
    DIALLED = "dialled"


def is_dialled(medium: Medium | None) -> bool:
    """Whether callbridge places a call with this medium itself (else the batch webhook connects it)."""
    if medium is None or medium.kind not in DIALLED_MEDIA:
        return False
    return getattr(medium, medium.kind).outgoing is not None


def is_timezone(name: str) -> bool:
    """Whether `name` is in the IANA timezone database (`Europe/Paris`)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _check_timezone(value: str) -> str:
    if not is_timezone(value):
        raise PydanticCustomError(
            "invalid_timezone", "'{value}' is not an IANA timezone (e.g. America/New_York)", {"value": value}
        )
    return value


#: An IANA timezone name (`Europe/Paris`), checked against the timezone database.
Timezone = Annotated[str, Field(max_length=64), AfterValidator(_check_timezone)]

_HH_MM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


def _parse_hh_mm(value: Any) -> time:
    match = _HH_MM.match(value) if isinstance(value, str) else None
    if match is None:
        raise PydanticCustomError(
            "invalid_calling_hours",
            'a calling hour is a local time as HH:MM ("09:00"), not "{value}"',
            {"value": value},
        )
    return time(int(match[1]), int(match[2]))


#: A local time of day as `"HH:MM"`.
LocalTime = Annotated[
    time,
    BeforeValidator(_parse_hh_mm),
    PlainSerializer(lambda value: value.strftime("%H:%M"), return_type=str),
    WithJsonSchema({"type": "string", "pattern": _HH_MM.pattern}),
]


class CallingHours(ApiModel):
    """The daily hours a call may be dialled in, local to its `timezone`: from `start` until `end`
    (`"09:00"`, `"20:00"`), every day. Beyond Ultravox."""

    start: LocalTime
    end: LocalTime

    @model_validator(mode="after")
    def _start_before_end(self) -> CallingHours:
        if self.start >= self.end:
            raise PydanticCustomError(
                "invalid_calling_hours", "callingHours.start must be before callingHours.end (the same day)"
            )
        return self


class ScheduledCallSpec(ApiModel):
    """One entry of a batch's `calls`: what its Call overrides in the agent's template.

    Without `medium` the call gets the agent's template medium. `timezone` and `callingHours` override the
    batch's: the call is dialled only inside its calling hours in its timezone.
    """

    medium: Medium | None = None
    template_context: dict[str, Any] = Field(default_factory=dict)
    metadata: Metadata = Field(default_factory=dict)
    timezone: Timezone | None = None
    calling_hours: CallingHours | None = None

    @field_validator("medium")
    @classmethod
    def _no_sip_password(cls, value: Medium | None) -> Medium | None:
        # A password would have to be stored with the call until it is dialled: not supported yet.
        outgoing = value.sip.outgoing if value is not None and value.sip is not None else None
        if outgoing is not None and outgoing.password is not None:
            raise PydanticCustomError(
                "sip_password_unsupported", "sip.outgoing.password is not supported in scheduled calls yet"
            )
        return value


class BatchRetry(ApiModel):
    """Dial a call nobody answered (busy, no-answer) again: up to `maxAttempts` dials, `backoff` apart."""

    max_attempts: int = Field(ge=1, le=20)
    backoff: Duration = 60.0


def check_window(start: datetime | None, end: datetime | None) -> None:
    """Raise `invalid_window` (a PydanticCustomError) unless `end` is after `start`."""
    if start is not None and end is not None and end <= start:
        raise PydanticCustomError("invalid_window", "windowEnd must be after windowStart")


class ScheduledBatchCreate(ApiModel):
    """`POST …/scheduled_batches`. `maxConcurrency`, `callsPerMinute` and `retry` go beyond Ultravox."""

    window_start: AwareDatetime | None = None
    window_end: AwareDatetime | None = None
    paused: bool = False
    max_concurrency: int | None = Field(default=None, ge=1)
    calls_per_minute: float | None = Field(default=None, gt=0, le=100_000)
    retry: BatchRetry | None = None
    webhook_url: str | None = Field(default=None, max_length=200, pattern=r"^https?://\S+$")
    #: Write-only: signs the webhook's requests; sealed at rest and never part of a response.
    webhook_secret: str | None = Field(default=None, min_length=16, max_length=120, repr=False)
    #: Its calls' timezone where they give none (beyond Ultravox).
    timezone: Timezone | None = None
    #: Its calls' calling hours where they give none (beyond Ultravox); they need a timezone.
    calling_hours: CallingHours | None = None
    #: Each validated as a ScheduledCallSpec by the API, one at a time.
    calls: list[dict[str, Any]] = Field(default_factory=list, validate_default=True)

    # A "before" validator, so the JSON Schema (the OpenAPI spec) can say each call is a ScheduledCallSpec;
    # anything but a list is left to the list check, as an "after" validator would.
    @field_validator("calls", mode="before", json_schema_input_type=list[ScheduledCallSpec])
    @classmethod
    def _at_least_one(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise PydanticCustomError("no_calls", "a batch needs at least one call")
        return value

    @model_validator(mode="after")
    def _window(self) -> ScheduledBatchCreate:
        check_window(self.window_start, self.window_end)
        return self


class ScheduledBatchUpdate(ApiModel):
    """`PATCH …/scheduled_batches/{batchId}`: the fields given replace the stored ones (null clears)."""

    paused: bool = False
    window_start: AwareDatetime | None = None
    window_end: AwareDatetime | None = None
    max_concurrency: int | None = Field(default=None, ge=1)
    calls_per_minute: float | None = Field(default=None, gt=0, le=100_000)

    @field_validator("paused", mode="before")
    @classmethod
    def _paused_not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("paused must be true or false")
        return value

    def changes(self) -> dict[str, Any]:
        """The given fields by column name."""
        return {name: getattr(self, name) for name in self.model_fields_set}


def shortest_window(calls: int, calls_per_minute: float) -> timedelta:
    """The shortest window `calls` fit in at `calls_per_minute`, in whole minutes (rounded up)."""
    return timedelta(minutes=math.ceil(calls / calls_per_minute))


class ScheduledBatch(ApiModel):
    """A batch as responses show it. `calls` and `webhookSecret` are write-only."""

    batch_id: str
    agent_id: str
    created: datetime
    window_start: datetime | None
    window_end: datetime | None
    paused: bool
    max_concurrency: int | None
    calls_per_minute: float | None
    retry: BatchRetry | None
    webhook_url: str | None
    timezone: str | None
    calling_hours: CallingHours | None
    total_count: int
    completed_count: int
    #: Calls the batch made that are live now (created, not ended): beyond Ultravox, read-only.
    live_count: int
    ended_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        """Every field, the unset ones as null (as Ultravox shows them)."""
        return self.model_dump(mode="json", by_alias=True)


class ScheduledCall(ApiModel):
    """One scheduled call as `…/scheduled_calls` lists it: its spec and its fate."""

    medium: dict[str, Any] | None
    template_context: dict[str, Any]
    metadata: dict[str, str]
    timezone: str | None
    calling_hours: CallingHours | None
    status: ScheduledCallStatus
    batch_id: str
    #: The latest Call made for it (a retried call has made others before).
    call_id: str | None
    error: str | None
    attempts: int

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class BatchEvent(ApiModel):
    """Something that happened to a batch or one of its calls (`…/scheduled_batches/{batchId}/events`)."""

    batch_id: str
    #: The scheduled call (and the Call made for it) the event is about; null for the batch's own.
    scheduled_call_id: str | None
    call_id: str | None
    wall_clock_timestamp: datetime
    severity: EventSeverity
    type: str
    text: str
    extras: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)
