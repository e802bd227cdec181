"""Webhooks and their delivery outbox (`webhooks`, `webhook_deliveries`); secrets sealed with the SecretBox.

Claiming due deliveries follows the scheduler's claims (`BatchRepository.claim_due`): two instances never
get the same row (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: one writer at a time).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.schemas.webhooks import RECENT_FAILURES, WebhookStatus
from app.store.db import Database
from app.store.paging import Cursor, PageResult, fetch_page
from app.store.secret_box import SecretBox
from app.store.tables import WebhookDeliveryRow, WebhookRow

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


def _webhook_context(webhook_id: str, index: int) -> str:
    return f"webhooks/{webhook_id}/secrets/{index}"


def _delivery_context(delivery_id: str, index: int) -> str:
    return f"webhook_deliveries/{delivery_id}/secrets/{index}"


async def _write_lock_on_sqlite(session: AsyncSession) -> None:
    if session.bind.dialect.name == "sqlite":
        await session.execute(text("BEGIN IMMEDIATE"))


@dataclass(frozen=True, slots=True)
class Destination:
    """Where one event goes: a webhook (`webhook_id`) or a call's callback (None), with plaintext secrets."""

    url: str
    secrets: list[str]
    webhook_id: str | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """A claimed outbox row, its secrets opened."""

    id: str
    webhook_id: str | None
    event: str
    url: str
    secrets: list[str]
    body: bytes
    attempts: int


class WebhookRepository:
    """Account webhooks."""

    def __init__(self, db: Database, box: SecretBox) -> None:
        self.db = db
        self.box = box

    def secrets_of(self, row: WebhookRow) -> list[str]:
        """The webhook's secrets in plaintext."""
        return [self.box.decrypt(token, _webhook_context(row.id, n)) for n, token in enumerate(row.secrets)]

    def _sealed(self, webhook_id: str, secrets: Sequence[str]) -> list[str]:
        return [self.box.encrypt(secret, _webhook_context(webhook_id, n)) for n, secret in enumerate(secrets)]

    async def add(self, row: WebhookRow) -> WebhookRow:
        """Store `row`, its `secrets` given in plaintext."""
        row.secrets = self._sealed(row.id, row.secrets)
        async with self.db.session.begin() as session:
            session.add(row)
        return row

    async def get(self, webhook_id: str) -> WebhookRow | None:
        async with self.db.session() as session:
            return await session.scalar(select(WebhookRow).where(WebhookRow.id == webhook_id))

    async def page(self, cursor: Cursor | None, page_size: int) -> PageResult:
        async with self.db.session() as session:
            return await fetch_page(
                session,
                select(WebhookRow),
                WebhookRow.seq,
                newest_first=True,
                cursor=cursor,
                page_size=page_size,
            )

    async def all(self) -> list[WebhookRow]:
        async with self.db.session() as session:
            return list(await session.scalars(select(WebhookRow).order_by(WebhookRow.seq)))

    async def update(self, webhook_id: str, **values: Any) -> WebhookRow | None:
        """Change the fields given (`secrets` in plaintext); None when there is no such webhook."""
        if "secrets" in values:
            values["secrets"] = self._sealed(webhook_id, values["secrets"])
        async with self.db.session.begin() as session:
            row = await session.scalar(select(WebhookRow).where(WebhookRow.id == webhook_id))
            if row is None:
                return None
            for key, value in values.items():
                setattr(row, key, value)
        return row

    async def delete(self, webhook_id: str) -> bool:
        """Delete the webhook and what it has still to deliver (delivered and failed rows stay)."""
        async with self.db.session.begin() as session:
            result = await session.execute(delete(WebhookRow).where(WebhookRow.id == webhook_id))
            await session.execute(
                delete(WebhookDeliveryRow).where(
                    WebhookDeliveryRow.webhook_id == webhook_id, WebhookDeliveryRow.status == PENDING
                )
            )
        return bool(result.rowcount)

    async def record_outcome(self, webhook_id: str, failure: str | None, now: datetime) -> None:
        """A delivery's outcome: a failure is remembered (the last few) and makes the webhook unhealthy; a
        success makes it normal again."""
        if failure is None:  # the common case writes only when the status changes
            async with self.db.session.begin() as session:
                await session.execute(
                    update(WebhookRow)
                    .where(WebhookRow.id == webhook_id, WebhookRow.status != WebhookStatus.NORMAL.value)
                    .values(status=WebhookStatus.NORMAL.value, last_status_change=now)
                )
            return
        async with self.db.session.begin() as session:
            await _write_lock_on_sqlite(session)
            query = select(WebhookRow).where(WebhookRow.id == webhook_id)
            if self.db.dialect == "postgresql":
                query = query.with_for_update()
            row = await session.scalar(query)
            if row is None:
                return
            entry = {"timestamp": now.isoformat(), "failure": failure}
            row.recent_failures = [*row.recent_failures, entry][-RECENT_FAILURES:]
            if row.status != WebhookStatus.UNHEALTHY.value:
                row.status, row.last_status_change = WebhookStatus.UNHEALTHY.value, now


class DeliveryRepository:
    """The outbox of webhook deliveries."""

    def __init__(self, db: Database, box: SecretBox) -> None:
        self.db = db
        self.box = box

    async def enqueue(
        self, call_id: str, event: str, body: bytes, destinations: Sequence[Destination], now: datetime
    ) -> list[str]:
        """One pending row per destination, due now, in one transaction; their ids."""
        rows = []
        for destination in destinations:
            row_id = str(uuid.uuid4())
            rows.append(
                WebhookDeliveryRow(
                    id=row_id,
                    webhook_id=destination.webhook_id,
                    call_id=call_id,
                    event=event,
                    url=destination.url,
                    secrets=[
                        self.box.encrypt(secret, _delivery_context(row_id, n))
                        for n, secret in enumerate(destination.secrets)
                    ],
                    body=body.decode(),
                    status=PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    created=now,
                )
            )
        if rows:
            async with self.db.session.begin() as session:
                session.add_all(rows)
        return [row.id for row in rows]

    async def claim_due(self, now: datetime, owner: str, lease_s: float, limit: int) -> list[Delivery]:
        """Claim up to `limit` due pending rows for `owner` for `lease_s` (an expired lease: due again)."""
        if limit <= 0:
            return []
        query = (
            select(WebhookDeliveryRow)
            .where(
                WebhookDeliveryRow.status == PENDING,
                WebhookDeliveryRow.next_attempt_at <= now,
                or_(WebhookDeliveryRow.lease_expires.is_(None), WebhookDeliveryRow.lease_expires <= now),
            )
            .order_by(WebhookDeliveryRow.next_attempt_at, WebhookDeliveryRow.seq)
            .limit(limit)
        )
        async with self.db.session() as session:  # most wakes find nothing: no write transaction then
            if await session.scalar(query.with_only_columns(WebhookDeliveryRow.seq).limit(1)) is None:
                return []
        if self.db.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        async with self.db.session.begin() as session:
            await _write_lock_on_sqlite(session)
            rows = list(await session.scalars(query))
            for row in rows:
                row.lease_owner, row.lease_expires = owner, now + timedelta(seconds=lease_s)
        return [
            Delivery(
                id=row.id,
                webhook_id=row.webhook_id,
                event=row.event,
                url=row.url,
                secrets=[
                    self.box.decrypt(t, _delivery_context(row.id, n)) for n, t in enumerate(row.secrets)
                ],
                body=row.body.encode(),
                attempts=row.attempts,
            )
            for row in rows
        ]

    async def next_due(self, after: datetime) -> datetime | None:
        """When the earliest pending row due later than `after` is due (None when there is none)."""
        async with self.db.session() as session:
            return await session.scalar(
                select(WebhookDeliveryRow.next_attempt_at)
                .where(WebhookDeliveryRow.status == PENDING, WebhookDeliveryRow.next_attempt_at > after)
                .order_by(WebhookDeliveryRow.next_attempt_at)
                .limit(1)
            )

    async def mark_delivered(self, delivery_id: str, now: datetime) -> None:
        await self._finish_attempt(delivery_id, status=DELIVERED, delivered=now, last_error=None)

    async def mark_failed_attempt(
        self, delivery_id: str, attempts: int, retry_at: datetime | None, error: str
    ) -> None:
        """Record a failed attempt: due again at `retry_at`, or `failed` for good when it is None."""
        if retry_at is None:
            await self._finish_attempt(delivery_id, status=FAILED, attempts=attempts, last_error=error[:200])
        else:
            await self._finish_attempt(
                delivery_id, attempts=attempts, next_attempt_at=retry_at, last_error=error[:200]
            )

    async def _finish_attempt(self, delivery_id: str, **values: Any) -> None:
        async with self.db.session.begin() as session:
            await session.execute(
                update(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.id == delivery_id)
                .values(lease_owner=None, lease_expires=None, **values)
            )

    async def release(self, delivery_ids: Sequence[str]) -> None:
        """Give up the leases of rows whose attempt was interrupted (shutdown): due again at once."""
        if not delivery_ids:
            return
        async with self.db.session.begin() as session:
            await session.execute(
                update(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.id.in_(delivery_ids), WebhookDeliveryRow.status == PENDING)
                .values(lease_owner=None, lease_expires=None)
            )

    async def of_call(self, call_id: str) -> list[WebhookDeliveryRow]:
        """A call's deliveries, oldest first (for tests and diagnostics)."""
        async with self.db.session() as session:
            return list(
                await session.scalars(
                    select(WebhookDeliveryRow)
                    .where(WebhookDeliveryRow.call_id == call_id)
                    .order_by(WebhookDeliveryRow.seq)
                )
            )
