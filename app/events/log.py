"""The call event log: events are queued without blocking the media path and written in batches.

A call's SIP messages (`sip_logs`) and the scheduled batches' events are written behind the same way, with
the call events (`store`, `record_batch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any

from app.schemas.calls import EventSeverity
from app.store.repositories import EventRepository
from app.store.tables import BatchEventRow, SipMessageRow, utcnow

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.1
MAX_BATCH = 500


class CallEventLog:
    """Records call events. `record` never awaits; `flush` waits until everything queued is stored."""

    def __init__(self, repository: EventRepository) -> None:
        self._repository = repository
        # Events as `call_events` columns (an ORM object per event cost more than storing it), SIP messages
        # as rows.
        self._pending: list[dict[str, Any] | SipMessageRow | BatchEventRow] = []
        self._writer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def record(
        self,
        call_id: str,
        call_created: datetime,
        type: str,
        text: str,
        severity: EventSeverity = EventSeverity.INFO,
        extras: dict[str, Any] | None = None,
    ) -> None:
        now = utcnow()
        self._pending.append(
            {
                "call_id": call_id,
                "wall_clock": now,
                "call_offset": max(0.0, (now - call_created).total_seconds()),
                "severity": severity.value,
                "type": type,
                "text": text,
                "extras": extras or {},
            }
        )

    def store(self, row: SipMessageRow | BatchEventRow) -> None:
        """Queue a row to be written with the next batch of events (never awaits)."""
        self._pending.append(row)

    def record_batch(
        self,
        batch_id: str,
        type: str,
        text: str,
        severity: EventSeverity = EventSeverity.INFO,
        extras: dict[str, Any] | None = None,
        *,
        scheduled_call_id: str | None = None,
        call_id: str | None = None,
    ) -> None:
        """Queue an event of a scheduled batch, or of one of its calls (never awaits)."""
        self.store(
            BatchEventRow(
                batch_id=batch_id,
                scheduled_call_id=scheduled_call_id,
                call_id=call_id,
                wall_clock=utcnow(),
                severity=severity.value,
                type=type,
                text=text,
                extras=extras or {},
            )
        )

    async def flush(self) -> None:
        async with self._lock:
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                try:
                    await self._repository.add_many(batch)
                except Exception:
                    log.exception("could not store %d call events/SIP messages; they are dropped", len(batch))

    async def start(self) -> None:
        self._writer = asyncio.create_task(self._write_periodically(), name="call-event-writer")

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        await self.flush()

    async def _write_periodically(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            if self._pending:
                await self.flush()
