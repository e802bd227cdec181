"""One call's event recorder: call events bound to the call, with bad messages counted, not flooded."""

from __future__ import annotations

from typing import Any

from app.events.log import CallEventLog
from app.metrics import BAD_FRAMES
from app.schemas.calls import EventSeverity
from app.store.tables import CallRow

#: Bad messages recorded as call events per call; beyond this they are only counted (metrics).
MAX_RECORDED_BAD_MESSAGES = 10


class CallRecorder:
    """Records call events for one call (`recorder(type, text, severity, extras)`)."""

    def __init__(self, events: CallEventLog, call: CallRow) -> None:
        self._events = events
        self._call_id = call.id
        self._created = call.created
        self._bad_messages = 0
        self._ignored_events: set[str] = set()

    def __call__(
        self,
        type: str,
        text: str,
        severity: EventSeverity = EventSeverity.INFO,
        extras: dict[str, Any] | None = None,
    ) -> None:
        self._events.record(self._call_id, self._created, type, text, severity, extras)

    def bad_message(self, reason: str) -> None:
        """A message from the far end that was skipped (the first few are recorded, all are counted)."""
        self._bad_messages += 1
        BAD_FRAMES.inc()
        if self._bad_messages > MAX_RECORDED_BAD_MESSAGES:
            return
        suffix = (
            " (further bad frames are only counted)"
            if self._bad_messages == MAX_RECORDED_BAD_MESSAGES
            else ""
        )
        self("provider_error", f"bad stream message ignored: {reason}{suffix}", EventSeverity.WARNING)

    def agent_audio_dropped(self, dropped_ms: float, why: str) -> None:
        """Agent audio ran so far ahead of real time that some was dropped (`why`: which queue was full)."""
        self(
            "pipeline_error",
            f"the agent sends audio faster than real time ({why}): {dropped_ms:.0f} ms dropped",
            EventSeverity.WARNING,
            {"droppedMs": round(dropped_ms)},
        )

    def ignored_event(self, event: str) -> None:
        """A well-formed event callbridge has no use for (recorded once per event name)."""
        if event not in self._ignored_events:
            self._ignored_events.add(event)
            self("provider_event_ignored", f"ignored stream event {event!r}", EventSeverity.DEBUG)
