"""The per-batch retry policy: a dialled call nobody answered (busy, no-answer) is dialled again later."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from app.providers.control import LegState
from app.schemas.calls import EndReason
from app.schemas.durations import parse_duration

#: Leg states worth another dial: the callee was there, just not available.
RETRYABLE_LEGS = frozenset({LegState.BUSY, LegState.NO_ANSWER})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`{"maxAttempts", "backoff"}` of a batch: dials in all, and the wait before each new one."""

    max_attempts: int
    backoff: timedelta

    @classmethod
    def from_json(cls, value: dict[str, Any] | None) -> RetryPolicy | None:
        """The stored policy (None: the batch has none)."""
        if not value:
            return None
        return cls(int(value["maxAttempts"]), timedelta(seconds=parse_duration(value.get("backoff", 0))))

    def wants_another(self, attempts: int, reason: EndReason, leg: LegState | None) -> bool:
        """Whether a call that ended so, after `attempts` dials, is dialled again."""
        return reason is EndReason.UNJOINED and leg in RETRYABLE_LEGS and attempts < self.max_attempts
