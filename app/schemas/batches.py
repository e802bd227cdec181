"""Scheduled batches of outbound calls (`/api/agents/{agentId}/scheduled_batches`), Ultravox-shaped.

A batch's `calls` are validated one by one (`ScheduledCallSpec`) and stored as their JSON, so a batch of
100,000 calls never becomes 100,000 models at once. Errors with their own code are `PydanticCustomError`s
whose type is that code (`BATCH_ERROR_CODES`), so the API can answer with it.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from app.schemas.base import ApiModel
from app.schemas.calls import Metadata
from app.schemas.durations import Duration
from app.schemas.media import Medium

#: Validation error types that are also the response's `code`.
BATCH_ERROR_CODES = frozenset({"no_calls", "invalid_window", "sip_password_unsupported"})
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


class ScheduledCallSpec(ApiModel):
    """One entry of a batch's `calls`: what its Call overrides in the agent's template.

    Without `medium` the call gets the agent's template medium.
    """

    medium: Medium | None = None
    template_context: dict[str, Any] = Field(default_factory=dict)
    metadata: Metadata = Field(default_factory=dict)

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
    #: Each validated as a ScheduledCallSpec by the API, one at a time.
    calls: list[dict[str, Any]] = Field(default_factory=list, validate_default=True)

    @field_validator("calls")
    @classmethod
    def _at_least_one(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not value:
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
    status: ScheduledCallStatus
    batch_id: str
    #: The latest Call made for it (a retried call has made others before).
    call_id: str | None
    error: str | None
    attempts: int

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)
