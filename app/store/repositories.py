"""Data access: one small repository per table. No HTTP and no call logic here."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import delete, exists, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.metrics import BATCH_LEASE_EXPIRIES
from app.pipeline.secret_options import PipelineSecrets, agent_owner, call_owner, plaintext_places
from app.scheduler.calling_hours import hours_of
from app.scheduler.store import Expiry, Fates
from app.schemas.batches import COMPLETED, FINAL_STATUSES, UNFINISHED, DialState, ScheduledCallStatus
from app.schemas.sip import SipConfigFields
from app.store.db import Database
from app.store.paging import Cursor, PageResult, fetch_page
from app.store.secret_box import SecretBox
from app.store.tables import (
    AgentRow,
    ApiKeyRow,
    BatchEventRow,
    CallEventRow,
    CallRow,
    ScheduledBatchRow,
    ScheduledCallRow,
    SipConfigRow,
    SipMessageRow,
    SipRegistrationRow,
    TelephonyConfigRow,
    utcnow,
)
from app.webhooks.callbacks import plaintext_callback_secrets, seal_callbacks

M = TypeVar("M", bound=BaseModel)

#: The PostgreSQL advisory lock that makes counting live calls and inserting one a single step.
CALL_CREATION_LOCK = 0x63616C6C


class CallLimitReached(Exception):
    """Inserting the call would put more calls live than the limit allows."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} calls are already live")
        self.limit = limit


def sealed_pipeline(secrets: PipelineSecrets | None, spec: dict[str, Any], owner: str) -> dict[str, Any]:
    """The pipeline spec as stored: its secrets sealed for `owner`.

    Without PipelineSecrets (a store used without a SecretBox, as in tests) a plaintext secret is refused.
    """
    if secrets is not None:
        return secrets.seal(spec, owner)
    if places := plaintext_places(spec):
        raise ValueError(f"no SecretBox to seal the pipeline secrets at {', '.join(places)}")
    return spec


def sealed_callbacks(
    secrets: PipelineSecrets | None, callbacks: dict[str, Any] | None, owner: str
) -> dict[str, Any] | None:
    """Callbacks as stored: their secrets sealed for `owner` (refused in plaintext without a SecretBox)."""
    if secrets is not None:
        return seal_callbacks(secrets.box, callbacks, owner)
    if plaintext_callback_secrets(callbacks):
        raise ValueError("no SecretBox to seal the callbacks' secrets")
    return callbacks


def _with_sealed_pipeline(
    secrets: PipelineSecrets | None, template: dict[str, Any], owner: str
) -> dict[str, Any]:
    sealed = dict(template)
    if "pipeline" in template:
        sealed["pipeline"] = sealed_pipeline(secrets, template["pipeline"], owner)
    if template.get("callbacks") is not None:
        sealed["callbacks"] = sealed_callbacks(secrets, template["callbacks"], owner)
    return sealed


class AgentRepository:
    """Agents; the secrets of a template's pipeline are sealed on every write, bound to the agent."""

    def __init__(self, db: Database, pipeline_secrets: PipelineSecrets | None = None) -> None:
        self.db = db
        self.pipeline_secrets = pipeline_secrets

    async def add(self, row: AgentRow) -> AgentRow:
        row.call_template = _with_sealed_pipeline(
            self.pipeline_secrets, row.call_template, agent_owner(row.id)
        )
        async with self.db.session.begin() as session:
            session.add(row)
        return row

    async def get(self, agent_id: str) -> AgentRow | None:
        async with self.db.session() as session:
            return await session.scalar(select(AgentRow).where(AgentRow.id == agent_id))

    async def page(self, cursor: Cursor | None, page_size: int) -> PageResult:
        async with self.db.session() as session:
            return await fetch_page(
                session, select(AgentRow), AgentRow.seq, newest_first=True, cursor=cursor, page_size=page_size
            )

    async def update(self, agent_id: str, **values: Any) -> AgentRow | None:
        if "call_template" in values:
            values["call_template"] = _with_sealed_pipeline(
                self.pipeline_secrets, values["call_template"], agent_owner(agent_id)
            )
        async with self.db.session.begin() as session:
            row = await session.scalar(select(AgentRow).where(AgentRow.id == agent_id))
            if row is None:
                return None
            for key, value in values.items():
                setattr(row, key, value)
        return row

    async def delete(self, agent_id: str) -> bool:
        async with self.db.session.begin() as session:
            result = await session.execute(delete(AgentRow).where(AgentRow.id == agent_id))
        return bool(result.rowcount)

    async def call_counts(self, agent_ids: Sequence[str]) -> dict[str, int]:
        if not agent_ids:
            return {}
        async with self.db.session() as session:
            rows = await session.execute(
                select(CallRow.agent_id, func.count())
                .where(CallRow.agent_id.in_(agent_ids))
                .group_by(CallRow.agent_id)
            )
            return dict(rows.all())


class CallRepository:
    """Calls; a new call's pipeline secrets are sealed on insert (an agent's call keeps its agent's)."""

    def __init__(self, db: Database, pipeline_secrets: PipelineSecrets | None = None) -> None:
        self.db = db
        self.pipeline_secrets = pipeline_secrets
        # Serializes this instance's call creations under a live-call limit (the database lock does the
        # same across instances; this keeps waiting creations from each holding a pooled connection).
        self._creation_lock = asyncio.Lock()

    async def add(self, row: CallRow) -> CallRow:
        self._seal(row)
        async with self.db.session.begin() as session:
            session.add(row)
        return row

    def _seal(self, row: CallRow) -> None:
        owner = call_owner(row.id, row.agent_id)
        pipeline = sealed_pipeline(self.pipeline_secrets, row.definition.pipeline, owner)
        callbacks = sealed_callbacks(self.pipeline_secrets, row.definition.callbacks, owner)
        row.definition = row.definition.model_copy(update={"pipeline": pipeline, "callbacks": callbacks})

    async def get(self, call_id: str) -> CallRow | None:
        async with self.db.session() as session:
            return await session.scalar(select(CallRow).where(CallRow.id == call_id))

    async def page(self, agent_id: str | None, cursor: Cursor | None, page_size: int) -> PageResult:
        query = select(CallRow)
        if agent_id is not None:
            query = query.where(CallRow.agent_id == agent_id)
        async with self.db.session() as session:
            return await fetch_page(
                session, query, CallRow.seq, newest_first=True, cursor=cursor, page_size=page_size
            )

    async def mark_joined(
        self, call_id: str, when: datetime, stream_id: str, provider_call_id: str | None
    ) -> bool:
        """Record the join; False when the call was already joined or has ended (first join wins)."""
        values: dict[str, Any] = {"joined": when, "join_deadline": None, "stream_id": stream_id}
        if provider_call_id:
            values["provider_call_id"] = provider_call_id
        async with self.db.session.begin() as session:
            result = await session.execute(
                update(CallRow)
                .where(CallRow.id == call_id, CallRow.joined.is_(None), CallRow.ended.is_(None))
                .values(**values)
            )
        return result.rowcount == 1

    async def mark_ended(self, call_id: str, when: datetime, reason: str) -> bool:
        """End the call; False when it had already ended (the first end reason wins)."""
        async with self.db.session.begin() as session:
            result = await session.execute(
                update(CallRow)
                .where(CallRow.id == call_id, CallRow.ended.is_(None))
                .values(ended=when, end_reason=reason, join_deadline=None)
            )
        return result.rowcount == 1

    async def add_unless_key_taken(self, row: CallRow, live_limit: int = 0) -> tuple[CallRow, bool]:
        """Insert `row` unless a call with its idempotency key exists: (the call, True if inserted).

        With a `live_limit`, counting the live calls and inserting are one step (CallLimitReached when
        `live_limit` calls are live), so no burst of creations gets past the limit.
        """
        try:
            if live_limit:
                return await self._add_within(row, live_limit)
            return await self.add(row), True
        except IntegrityError:
            existing = await self.by_idempotency_key(row.idempotency_key)
            if existing is None:  # the violation was not the key's
                raise
            return existing, False

    async def _add_within(self, row: CallRow, live_limit: int) -> tuple[CallRow, bool]:
        self._seal(row)
        async with self._creation_lock, self.db.session.begin() as session:
            await self._lock_creations(session)
            if row.idempotency_key is not None:  # a request racing with the same key may have won
                earlier = await session.scalar(
                    select(CallRow).where(CallRow.idempotency_key == row.idempotency_key)
                )
                if earlier is not None:
                    return earlier, False
            live = select(func.count()).select_from(CallRow).where(CallRow.ended.is_(None))
            if (await session.scalar(live) or 0) >= live_limit:
                raise CallLimitReached(live_limit)
            session.add(row)
        return row, True

    async def _lock_creations(self, session: AsyncSession) -> None:
        """Take the database's creation lock for this transaction (released at commit or rollback)."""
        if self.db.dialect == "postgresql":
            await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CALL_CREATION_LOCK})
        elif self.db.dialect == "sqlite":
            # The write lock from the start: another process on the same file waits instead of
            # counting the same calls.
            await session.execute(text("BEGIN IMMEDIATE"))

    async def by_idempotency_key(self, key: str) -> CallRow | None:
        async with self.db.session() as session:
            return await session.scalar(select(CallRow).where(CallRow.idempotency_key == key))

    async def update_leg(self, call_id: str, **values: Any) -> None:
        """Record provider-leg facts on a live or ended call (ids, status, answer time)."""
        async with self.db.session.begin() as session:
            await session.execute(update(CallRow).where(CallRow.id == call_id).values(**values))

    async def add_sip_transfer_billing(self, call_id: str, seconds: float) -> None:
        """Add a transfer's second SIP leg's billed seconds to the call's SIP billing."""
        async with self.db.session.begin() as session:
            await session.execute(
                update(CallRow)
                .where(CallRow.id == call_id)
                .values(sip_transfer_billed=CallRow.sip_transfer_billed + seconds)
            )

    async def mark_answered(self, call_id: str, when: datetime) -> bool:
        """Record the callee's answer once; False when it was recorded before or the call has ended."""
        async with self.db.session.begin() as session:
            result = await session.execute(
                update(CallRow)
                .where(CallRow.id == call_id, CallRow.answered.is_(None), CallRow.ended.is_(None))
                .values(answered=when)
            )
        return result.rowcount == 1

    async def live_count(self) -> int:
        """Calls created and not ended, service-wide (every instance's)."""
        async with self.db.session() as session:
            live = select(func.count()).select_from(CallRow).where(CallRow.ended.is_(None))
            return await session.scalar(live) or 0

    async def watch(self, after_seq: int | None, watched: Sequence[str], limit: int = 200) -> list[CallRow]:
        """For a live view of the calls: the `watched` ones (to see them join and end), then up to `limit`
        calls created after `after_seq` (None: the live ones), oldest first."""
        new = CallRow.ended.is_(None) if after_seq is None else CallRow.seq > after_seq
        rows: list[CallRow] = []
        async with self.db.session() as session:
            if watched:
                rows += await session.scalars(select(CallRow).where(CallRow.id.in_(watched)))
            seen = set(watched)
            created = await session.scalars(select(CallRow).where(new).order_by(CallRow.seq).limit(limit))
            return rows + [row for row in created if row.id not in seen]

    async def last_seq(self) -> int:
        """The `seq` of the newest call (0 when there is none)."""
        async with self.db.session() as session:
            return await session.scalar(select(func.max(CallRow.seq))) or 0

    async def past_join_deadline(self, now: datetime, limit: int = 500) -> list[CallRow]:
        """Calls never joined whose join deadline has passed (joining or ending clears the deadline)."""
        async with self.db.session() as session:
            rows = await session.scalars(
                select(CallRow)
                .where(CallRow.join_deadline.is_not(None), CallRow.join_deadline <= now)
                .limit(limit)
            )
            return list(rows)


def _columns(row: SipMessageRow | BatchEventRow) -> dict[str, Any]:
    """A row written behind as its table's columns (its `seq` is the database's)."""
    return {column.key: getattr(row, column.key) for column in row.__table__.columns if column.key != "seq"}


async def _write_lock_on_sqlite(session: AsyncSession) -> None:
    """On SQLite, take the write lock now: another process on the file waits instead of reading what this
    transaction is about to change (PostgreSQL locks rows instead)."""
    if session.bind.dialect.name == "sqlite":
        await session.execute(text("BEGIN IMMEDIATE"))


#: Scheduled calls are inserted this many at a time: 1000 held the event loop 10-20 ms per chunk (the
#: driver binding the rows with the GIL), 250 under 10 ms, in the same total time.
BATCH_INSERT_CHUNK = 250


class BatchRepository:
    """Scheduled batches and their calls; a batch's webhook secret is sealed with the SecretBox.

    Writes that change a batch's counts lock the batch row first (PostgreSQL) or the database (SQLite),
    so two instances finishing a batch's last calls at once still see each other's and end it.
    """

    def __init__(self, db: Database, box: SecretBox | None = None) -> None:
        self.db = db
        self.box = box

    # --- batches ----------------------------------------------------------------------------------

    async def create(self, batch: ScheduledBatchRow, specs: Iterable[dict[str, Any]]) -> ScheduledBatchRow:
        """Store `batch` (its `webhook_secret` given in plaintext) and one FUTURE call per spec, in order.

        One transaction: a batch is never seen half stored. `specs` is consumed a chunk at a time.
        """
        if batch.webhook_secret is not None:
            batch.webhook_secret = self._seal_secret(batch.id, batch.webhook_secret)
        batch.total_count = batch.completed_count = 0
        due = batch.window_start or batch.created
        positions = itertools.count()

        def first_due(spec: dict[str, Any]) -> datetime:
            hours = hours_of(spec, batch.calling_hours, batch.timezone)
            return due if hours is None else hours.opens_at(due)

        async with self.db.session.begin() as session:
            session.add(batch)
            await session.flush()
            specs_left = iter(specs)
            while chunk := list(itertools.islice(specs_left, BATCH_INSERT_CHUNK)):
                rows = [
                    {
                        "id": str(uuid.uuid4()),
                        "batch_id": batch.id,
                        "position": next(positions),
                        "status": ScheduledCallStatus.FUTURE.value,
                        "spec": spec,
                        "attempts": 0,
                        "next_attempt_at": first_due(spec),
                        "dial_state": DialState.NONE.value,
                        "updated": batch.created,
                    }
                    for spec in chunk
                ]
                await session.execute(insert(ScheduledCallRow.__table__), rows)  # Core: no ORM bulk path
                batch.total_count += len(rows)
        return batch

    def _seal_secret(self, batch_id: str, secret: str) -> str:
        if self.box is None:
            raise ValueError("no SecretBox to seal the batch's webhook secret")
        return self.box.encrypt(secret, _webhook_secret_context(batch_id))

    def webhook_secret(self, batch: ScheduledBatchRow) -> str | None:
        """The batch's webhook secret in plaintext (None when it has none)."""
        if batch.webhook_secret is None:
            return None
        if self.box is None:
            raise ValueError("no SecretBox to open the batch's webhook secret")
        return self.box.decrypt(batch.webhook_secret, _webhook_secret_context(batch.id))

    async def get(self, agent_id: str, batch_id: str) -> ScheduledBatchRow | None:
        """The agent's batch, unless it was deleted."""
        async with self.db.session() as session:
            return await session.scalar(
                select(ScheduledBatchRow).where(
                    ScheduledBatchRow.id == batch_id,
                    ScheduledBatchRow.agent_id == agent_id,
                    ScheduledBatchRow.deleted.is_(False),
                )
            )

    async def get_by_id(self, batch_id: str) -> ScheduledBatchRow | None:
        """The batch, deleted or not."""
        async with self.db.session() as session:
            return await session.scalar(select(ScheduledBatchRow).where(ScheduledBatchRow.id == batch_id))

    async def page(self, agent_id: str, cursor: Cursor | None, page_size: int) -> PageResult:
        """The agent's batches not deleted, newest first."""
        query = select(ScheduledBatchRow).where(
            ScheduledBatchRow.agent_id == agent_id, ScheduledBatchRow.deleted.is_(False)
        )
        async with self.db.session() as session:
            return await fetch_page(
                session, query, ScheduledBatchRow.seq, newest_first=True, cursor=cursor, page_size=page_size
            )

    async def update(self, batch_id: str, **fields: Any) -> None:
        """Set columns of the batch (`webhook_secret` given in plaintext)."""
        if fields.get("webhook_secret") is not None:
            fields["webhook_secret"] = self._seal_secret(batch_id, fields["webhook_secret"])
        async with self.db.session.begin() as session:
            await session.execute(
                update(ScheduledBatchRow).where(ScheduledBatchRow.id == batch_id).values(**fields)
            )

    async def delete(self, batch_id: str) -> None:
        """Stop the batch for good: hidden from the API, never dialled again; its Calls stay."""
        await self.update(batch_id, deleted=True, paused=True)

    async def active_batches(self, now: datetime) -> list[ScheduledBatchRow]:
        """Batches to dial from: not deleted, not paused, not ended, and their window started."""
        async with self.db.session() as session:
            rows = await session.scalars(
                select(ScheduledBatchRow)
                .where(
                    ScheduledBatchRow.deleted.is_(False),
                    ScheduledBatchRow.paused.is_(False),
                    ScheduledBatchRow.ended_at.is_(None),
                    (ScheduledBatchRow.window_start.is_(None)) | (ScheduledBatchRow.window_start <= now),
                )
                .order_by(ScheduledBatchRow.seq)
            )
            return list(rows)

    async def _lock_batch(self, session: AsyncSession, batch_id: str) -> None:
        """Serialize this transaction with the others changing the batch's counts (see the class doc).

        On SQLite the transaction must have begun with `_write_lock_on_sqlite`.
        """
        if self.db.dialect == "postgresql":
            await session.execute(
                select(ScheduledBatchRow.id).where(ScheduledBatchRow.id == batch_id).with_for_update()
            )

    async def _end_if_done(self, session: AsyncSession, batch_id: str, now: datetime) -> Fates | None:
        """Set the batch's ended_at when none of its calls is left FUTURE or PENDING; then its calls'
        count by final status (only the one transaction that ends a batch gets them)."""
        unfinished = exists().where(
            ScheduledCallRow.batch_id == batch_id, ScheduledCallRow.status.in_(UNFINISHED)
        )
        ended = await session.execute(
            update(ScheduledBatchRow)
            .where(ScheduledBatchRow.id == batch_id, ScheduledBatchRow.ended_at.is_(None), ~unfinished)
            .values(ended_at=now)
        )
        if ended.rowcount != 1:
            return None
        rows = await session.execute(
            select(ScheduledCallRow.status, func.count())
            .where(ScheduledCallRow.batch_id == batch_id)
            .group_by(ScheduledCallRow.status)
        )
        counts = dict(rows.all())
        return {str(status): counts.get(status, 0) for status in FINAL_STATUSES}

    # --- scheduled calls ---------------------------------------------------------------------------

    async def get_call(self, scheduled_call_id: str) -> ScheduledCallRow | None:
        async with self.db.session() as session:
            return await session.scalar(
                select(ScheduledCallRow).where(ScheduledCallRow.id == scheduled_call_id)
            )

    async def calls_page(
        self, batch_id: str, status: str | None, cursor: Cursor | None, page_size: int
    ) -> PageResult:
        """The batch's scheduled calls in their order in the batch, optionally only those in `status`."""
        query = select(ScheduledCallRow).where(ScheduledCallRow.batch_id == batch_id)
        if status is not None:
            query = query.where(ScheduledCallRow.status == status)
        async with self.db.session() as session:
            return await fetch_page(
                session, query, ScheduledCallRow.seq, newest_first=False, cursor=cursor, page_size=page_size
            )

    async def created_calls_page(self, batch_id: str, cursor: Cursor | None, page_size: int) -> PageResult:
        """The Calls the batch made (CallRows), newest first like `/api/calls`."""
        query = select(CallRow).where(CallRow.batch_id == batch_id)
        async with self.db.session() as session:
            return await fetch_page(
                session, query, CallRow.seq, newest_first=True, cursor=cursor, page_size=page_size
            )

    async def claim_due(
        self,
        batch_id: str,
        now: datetime,
        owner: str,
        lease_s: float,
        limit: int,
        *,
        unknown_only: bool = False,
    ) -> list[ScheduledCallRow]:
        """Claim up to `limit` due calls of the batch for `owner` for `lease_s`: they become PENDING.

        Due: FUTURE with next_attempt_at <= now, or PENDING whose lease expired (its holder stopped):
        before its dial was recorded (dial_state none: dialled as usual), or while its dial was under way
        (dial_state dialling: the outcome is unknown, the new holder reconciles it with the provider before
        anything is dialled again; `unknown_only` claims only those). Nothing is claimed from a paused or
        deleted batch. Two instances
        claiming at once never get the same call (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: one writer).
        """
        if limit <= 0:
            return []
        due = (
            (ScheduledCallRow.status == ScheduledCallStatus.FUTURE)
            & (ScheduledCallRow.next_attempt_at <= now)
        ) | (
            (ScheduledCallRow.status == ScheduledCallStatus.PENDING)
            & (ScheduledCallRow.dial_state.in_([DialState.NONE, DialState.DIALLING]))
            & (ScheduledCallRow.lease_expires <= now)
        )
        if unknown_only:
            due = (
                (ScheduledCallRow.status == ScheduledCallStatus.PENDING)
                & (ScheduledCallRow.dial_state == DialState.DIALLING)
                & (ScheduledCallRow.lease_expires <= now)
            )
        query = (
            select(ScheduledCallRow)
            .where(ScheduledCallRow.batch_id == batch_id, due)
            .order_by(ScheduledCallRow.next_attempt_at, ScheduledCallRow.seq)
            .limit(limit)
        )
        if self.db.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        async with self.db.session.begin() as session:
            await _write_lock_on_sqlite(session)
            batch = (
                await session.execute(
                    select(ScheduledBatchRow.paused, ScheduledBatchRow.deleted).where(
                        ScheduledBatchRow.id == batch_id
                    )
                )
            ).one_or_none()
            if batch is None or batch.paused or batch.deleted:
                return []
            rows = list(await session.scalars(query))
            lease_expires = now + timedelta(seconds=lease_s)
            for row in rows:
                if row.status == ScheduledCallStatus.PENDING:
                    BATCH_LEASE_EXPIRIES.labels(row.dial_state).inc()
                row.status = ScheduledCallStatus.PENDING.value
                row.lease_owner, row.lease_expires, row.updated = owner, lease_expires, now
        return rows

    async def mark_dialling(self, call_id: str, owner: str) -> bool:
        """Record that `owner` is about to dial the call (dial_state none → dialling, attempts + 1).

        False when `owner` no longer holds the call's claim (another instance took it after the lease
        expired) or its dial was recorded already: then it must not be dialled.
        """
        now = utcnow()
        return await self._move_dial_state(
            call_id,
            owner,
            DialState.NONE,
            dial_state=DialState.DIALLING.value,
            attempts=ScheduledCallRow.attempts + 1,
            dial_started=now,
            updated=now,
        )

    async def not_dialled(self, call_id: str, owner: str) -> bool:
        """Record that the dial a crash left `dialling` provably never reached the provider: dial_state
        back to none and its attempt uncounted, so `owner` (holding the claim) dials it as usual.

        False when `owner` no longer holds the claim or the call is not `dialling`.
        """
        return await self._move_dial_state(
            call_id,
            owner,
            DialState.DIALLING,
            dial_state=DialState.NONE.value,
            attempts=ScheduledCallRow.attempts - 1,
            dial_started=None,
            updated=utcnow(),
        )

    async def _move_dial_state(self, call_id: str, owner: str, current: DialState, **values: Any) -> bool:
        """Set `values` on the PENDING call `owner` holds if its dial_state is `current` (else False)."""
        async with self.db.session.begin() as session:
            result = await session.execute(
                update(ScheduledCallRow)
                .where(
                    ScheduledCallRow.id == call_id,
                    ScheduledCallRow.status == ScheduledCallStatus.PENDING,
                    ScheduledCallRow.lease_owner == owner,
                    ScheduledCallRow.dial_state == current,
                )
                .values(**values)
            )
        return result.rowcount == 1

    async def calls_of(self, scheduled_call_id: str) -> list[CallRow]:
        """The Calls made for the scheduled call, the latest first."""
        async with self.db.session() as session:
            rows = await session.scalars(
                select(CallRow)
                .where(CallRow.scheduled_call_id == scheduled_call_id)
                .order_by(CallRow.seq.desc())
            )
            return list(rows)

    async def finish(
        self, call_id: str, status: str, *, created_call_id: str | None = None, error: str | None = None
    ) -> Fates | None:
        """End the scheduled call SUCCESS, ERROR or EXPIRED (once: a finished call is left as it is).

        SUCCESS and ERROR count in the batch's completed_count; the batch ends when none is left to dial:
        then its fates are returned.
        """
        final = ScheduledCallStatus(status)
        if final in UNFINISHED:
            raise ValueError(f"finish takes SUCCESS, ERROR or EXPIRED, not {status}")
        now = utcnow()
        values: dict[str, Any] = {"status": final.value, "error": error, "updated": now}
        if created_call_id is not None:
            values["call_id"] = created_call_id
        if final is ScheduledCallStatus.SUCCESS:
            values["dial_state"] = DialState.DIALLED.value
        async with self.db.session.begin() as session:
            batch_id = await self._lock_batch_of(session, call_id)
            if batch_id is None:
                return None
            result = await session.execute(
                update(ScheduledCallRow)
                .where(ScheduledCallRow.id == call_id, ScheduledCallRow.status.in_(UNFINISHED))
                .values(**values)
            )
            if result.rowcount != 1:
                return None
            if final in COMPLETED:
                await session.execute(
                    update(ScheduledBatchRow)
                    .where(ScheduledBatchRow.id == batch_id)
                    .values(completed_count=ScheduledBatchRow.completed_count + 1)
                )
            return await self._end_if_done(session, batch_id, now)

    async def _lock_batch_of(self, session: AsyncSession, call_id: str) -> str | None:
        """The batch of scheduled call `call_id`, its row locked for this transaction (None: no such call)."""
        await _write_lock_on_sqlite(session)
        batch_id = await session.scalar(
            select(ScheduledCallRow.batch_id).where(ScheduledCallRow.id == call_id)
        )
        if batch_id is not None:
            await self._lock_batch(session, batch_id)
        return batch_id

    async def retry_later(self, call_id: str, at: datetime, attempts: int) -> None:
        """Put the call back to FUTURE, due `at`, with `attempts` dials counted (its dial_state none).

        A call that had completed (SUCCESS, ERROR) leaves completed_count, and its batch is running again.
        """
        now = utcnow()
        async with self.db.session.begin() as session:
            batch_id = await self._lock_batch_of(session, call_id)
            if batch_id is None:
                return
            previous = await session.scalar(
                select(ScheduledCallRow.status).where(ScheduledCallRow.id == call_id)
            )
            await session.execute(
                update(ScheduledCallRow)
                .where(ScheduledCallRow.id == call_id)
                .values(
                    status=ScheduledCallStatus.FUTURE.value,
                    next_attempt_at=at,
                    attempts=attempts,
                    dial_state=DialState.NONE.value,
                    lease_owner=None,
                    lease_expires=None,
                    error=None,
                    updated=now,
                )
            )
            batch_values: dict[str, Any] = {"ended_at": None}
            if previous in COMPLETED:
                batch_values["completed_count"] = ScheduledBatchRow.completed_count - 1
            await session.execute(
                update(ScheduledBatchRow).where(ScheduledBatchRow.id == batch_id).values(**batch_values)
            )

    async def expire_unstarted(self, batch_id: str, now: datetime) -> Expiry:
        """Once the batch's window has ended, its calls not dialled become EXPIRED: how many, and the
        batch's fates if that ended it.

        Not dialled: FUTURE, or PENDING whose lease expired before its dial was recorded.
        """
        async with self.db.session.begin() as session:
            await _write_lock_on_sqlite(session)
            await self._lock_batch(session, batch_id)
            window_end = await session.scalar(
                select(ScheduledBatchRow.window_end).where(ScheduledBatchRow.id == batch_id)
            )
            if window_end is None or window_end > now:
                return Expiry(0, None)
            unstarted = (ScheduledCallRow.status == ScheduledCallStatus.FUTURE) | (
                (ScheduledCallRow.status == ScheduledCallStatus.PENDING)
                & (ScheduledCallRow.dial_state == DialState.NONE)
                & (ScheduledCallRow.lease_expires <= now)
            )
            result = await session.execute(
                update(ScheduledCallRow)
                .where(ScheduledCallRow.batch_id == batch_id, unstarted)
                .values(
                    status=ScheduledCallStatus.EXPIRED.value,
                    error="the batch's window ended before it was dialled",
                    lease_owner=None,
                    lease_expires=None,
                    updated=now,
                )
            )
            ended = await self._end_if_done(session, batch_id, now)
        return Expiry(result.rowcount, ended)

    async def queue_depth(self, batch_ids: Sequence[str]) -> dict[str, int]:
        """How many of these batches' calls are FUTURE and PENDING."""
        counts = dict.fromkeys(UNFINISHED, 0)
        if batch_ids:
            async with self.db.session() as session:
                rows = await session.execute(
                    select(ScheduledCallRow.status, func.count())
                    .where(ScheduledCallRow.batch_id.in_(batch_ids), ScheduledCallRow.status.in_(UNFINISHED))
                    .group_by(ScheduledCallRow.status)
                )
                counts.update(rows.all())
        return {str(status): count for status, count in counts.items()}

    async def live_calls(self, batch_id: str) -> int:
        """Calls the batch made that are live (created and not ended)."""
        async with self.db.session() as session:
            live = (
                select(func.count())
                .select_from(CallRow)
                .where(CallRow.batch_id == batch_id, CallRow.ended.is_(None))
            )
            return await session.scalar(live) or 0

    async def live_calls_of(self, batch_ids: Sequence[str]) -> dict[str, int]:
        """`live_calls` of each batch in one query (batches with none live are absent)."""
        if not batch_ids:
            return {}
        async with self.db.session() as session:
            rows = await session.execute(
                select(CallRow.batch_id, func.count().label("live"))
                .where(CallRow.batch_id.in_(batch_ids), CallRow.ended.is_(None))
                .group_by(CallRow.batch_id)
            )
            return {row.batch_id: row.live for row in rows}


def _webhook_secret_context(batch_id: str) -> str:
    return f"scheduled_batch/{batch_id}/webhookSecret"


class EventRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_many(self, rows: Sequence[dict[str, Any] | SipMessageRow | BatchEventRow]) -> None:
        """Store call events (`call_events` columns as dicts) and the SIP messages and batch events written
        behind with them, in order, in one transaction. Core inserts: the ORM's unit of work cost ~8 % of a
        loaded server's CPU for rows nothing reads back."""
        by_table: dict[Any, list[dict[str, Any]]] = {}
        for row in rows:
            if type(row) is dict:
                by_table.setdefault(CallEventRow.__table__, []).append(row)
            else:
                by_table.setdefault(row.__table__, []).append(_columns(row))
        async with self.db.engine.begin() as connection:  # the tables themselves: no ORM bulk machinery
            for table, columns in by_table.items():
                await connection.execute(insert(table), columns)

    async def page(
        self, call_id: str, severities: Sequence[str], cursor: Cursor | None, page_size: int
    ) -> PageResult:
        """A call's events in the order they happened."""
        return await self._events_page(
            CallEventRow, CallEventRow.call_id == call_id, severities, cursor, page_size
        )

    async def after(self, call_id: str, after_seq: int, limit: int = 500) -> list[CallEventRow]:
        """A call's events stored after the one with `after_seq` (0: from the first), in order."""
        query = (
            select(CallEventRow)
            .where(CallEventRow.call_id == call_id, CallEventRow.seq > after_seq)
            .order_by(CallEventRow.seq)
            .limit(limit)
        )
        async with self.db.session() as session:
            return list(await session.scalars(query))

    async def batch_page(
        self, batch_id: str, severities: Sequence[str], cursor: Cursor | None, page_size: int
    ) -> PageResult:
        """A batch's events in the order they happened."""
        of_batch = BatchEventRow.batch_id == batch_id
        return await self._events_page(BatchEventRow, of_batch, severities, cursor, page_size)

    async def _events_page(
        self,
        table: type[CallEventRow] | type[BatchEventRow],
        of: Any,
        severities: Sequence[str],
        cursor: Cursor | None,
        page_size: int,
    ) -> PageResult:
        query = select(table).where(of, table.severity.in_(severities))
        async with self.db.session() as session:
            return await fetch_page(
                session, query, table.seq, newest_first=False, cursor=cursor, page_size=page_size
            )


class TelephonyConfigRepository:
    """Provider credentials; secret fields are encrypted with the SecretBox, bound to provider + field."""

    def __init__(self, db: Database, box: SecretBox) -> None:
        self.db = db
        self.box = box

    async def get(self, provider: str) -> tuple[dict[str, Any], TelephonyConfigRow] | None:
        """(every field, decrypted; the row) or None when no config is imported."""
        async with self.db.session() as session:
            row = await session.get(TelephonyConfigRow, provider)
        if row is None:
            return None
        fields = dict(row.public)
        for name, token in row.secrets.items():
            fields[name] = self.box.decrypt(token, f"telephony_config/{provider}/{name}")
        return fields, row

    async def load(self, provider: str, model: type[M]) -> M | None:
        """The provider's config validated as `model` (its config schema), or None when none is imported."""
        found = await self.get(provider)
        return model.model_validate(found[0]) if found else None

    async def put(self, provider: str, public: dict[str, Any], secrets: dict[str, str]) -> TelephonyConfigRow:
        sealed = {
            name: self.box.encrypt(value, f"telephony_config/{provider}/{name}")
            for name, value in secrets.items()
        }
        now = utcnow()
        async with self.db.session.begin() as session:
            row = await session.get(TelephonyConfigRow, provider)
            if row is None:
                row = TelephonyConfigRow(
                    provider=provider, public=public, secrets=sealed, created=now, updated=now
                )
                session.add(row)
            else:
                row.public, row.secrets, row.updated = public, sealed, now
        return row

    async def delete(self, provider: str) -> bool:
        async with self.db.session.begin() as session:
            result = await session.execute(
                delete(TelephonyConfigRow).where(TelephonyConfigRow.provider == provider)
            )
        return bool(result.rowcount)


#: The id of the sip_config table's single row.
SIP_CONFIG_ROW_ID = 1


class SipConfigRepository:
    """The account SIP config: one row; without it (never migrated that far) a fresh install's defaults.

    The fallback handler's secrets are sealed with the SecretBox (bound to their place in the config).
    """

    def __init__(self, db: Database, box: SecretBox) -> None:
        self.db = db
        self.box = box

    async def get(self) -> SipConfigFields:
        async with self.db.session() as session:
            row = await session.get(SipConfigRow, SIP_CONFIG_ROW_ID)
        if row is None:
            return SipConfigFields()
        handler = row.fallback_handler
        return SipConfigFields.model_validate(
            {
                "allowedCidrRanges": row.allowed_cidr_ranges,
                "allowAllAgents": row.allow_all_agents,
                "allowedAgents": row.allowed_agents,
                "fallbackHandler": None
                if handler is None
                else {
                    "url": handler["url"],
                    "secrets": [
                        self.box.decrypt(token, _handler_secret_context(n))
                        for n, token in enumerate(handler["secrets"])
                    ],
                },
            }
        )

    async def update(self, config: SipConfigFields) -> SipConfigFields:
        """Store `config` in place of the current one; returns it."""
        stored = config.model_dump(mode="json", by_alias=True, exclude={"fallback_handler"})
        handler = config.fallback_handler
        async with self.db.session.begin() as session:
            row = await session.get(SipConfigRow, SIP_CONFIG_ROW_ID)
            if row is None:
                row = SipConfigRow(id=SIP_CONFIG_ROW_ID)
                session.add(row)
            row.allowed_cidr_ranges = stored["allowedCidrRanges"]
            row.allow_all_agents = stored["allowAllAgents"]
            row.allowed_agents = stored["allowedAgents"]
            row.fallback_handler = (
                None
                if handler is None
                else {
                    "url": handler.url,
                    "secrets": [
                        self.box.encrypt(secret, _handler_secret_context(n))
                        for n, secret in enumerate(handler.secrets)
                    ],
                }
            )
            row.updated = utcnow()
        return config


def _handler_secret_context(index: int) -> str:
    return f"sip_config/fallbackHandler/secrets/{index}"


class SipMessageRepository:
    """The SIP messages of calls (written behind with the call events, read here)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def page(self, call_id: str, cursor: Cursor | None, page_size: int) -> PageResult:
        query = select(SipMessageRow).where(SipMessageRow.call_id == call_id)
        async with self.db.session() as session:
            return await fetch_page(
                session, query, SipMessageRow.seq, newest_first=False, cursor=cursor, page_size=page_size
            )


class SipRegistrationRepository:
    """SIP registrations; the password is sealed with the SecretBox, bound to the registration."""

    def __init__(self, db: Database, box: SecretBox) -> None:
        self.db = db
        self.box = box

    def seal(self, registration_id: str, password: str) -> str:
        """The stored form of a registration's password."""
        return self.box.encrypt(password, _registration_password_context(registration_id))

    def password(self, row: SipRegistrationRow) -> str:
        """The registration's password in plaintext (for its REGISTER client only)."""
        return self.box.decrypt(row.password, _registration_password_context(row.id))

    async def add(self, row: SipRegistrationRow) -> SipRegistrationRow:
        """Store `row`, its `password` given in plaintext."""
        row.password = self.seal(row.id, row.password)
        async with self.db.session.begin() as session:
            session.add(row)
        return row

    async def get(self, registration_id: str) -> SipRegistrationRow | None:
        async with self.db.session() as session:
            return await session.scalar(
                select(SipRegistrationRow).where(SipRegistrationRow.id == registration_id)
            )

    async def all(self) -> list[SipRegistrationRow]:
        """Every registration, oldest first."""
        async with self.db.session() as session:
            return list(await session.scalars(select(SipRegistrationRow).order_by(SipRegistrationRow.seq)))

    async def page(self, cursor: Cursor | None, page_size: int) -> PageResult:
        async with self.db.session() as session:
            return await fetch_page(
                session,
                select(SipRegistrationRow),
                SipRegistrationRow.seq,
                newest_first=True,
                cursor=cursor,
                page_size=page_size,
            )

    async def update(self, registration_id: str, **values: Any) -> SipRegistrationRow | None:
        """Change the fields given (a `password` in plaintext); the outcome of the old settings is
        cleared (`successful`, `last_error`, `expires_at` back to null). None when there is no such row."""
        if "password" in values:
            values["password"] = self.seal(registration_id, values["password"])
        values |= {"successful": None, "last_error": None, "expires_at": None}
        async with self.db.session.begin() as session:
            row = await session.scalar(
                select(SipRegistrationRow).where(SipRegistrationRow.id == registration_id)
            )
            if row is None:
                return None
            for key, value in values.items():
                setattr(row, key, value)
        return row

    async def record_outcome(
        self, registration_id: str, successful: bool, last_error: str | None, expires_at: datetime | None
    ) -> None:
        """Store what the registrar last answered (nothing happens when the registration is gone)."""
        async with self.db.session.begin() as session:
            await session.execute(
                update(SipRegistrationRow)
                .where(SipRegistrationRow.id == registration_id)
                .values(successful=successful, last_error=last_error, expires_at=expires_at)
            )

    async def delete(self, registration_id: str) -> bool:
        async with self.db.session.begin() as session:
            result = await session.execute(
                delete(SipRegistrationRow).where(SipRegistrationRow.id == registration_id)
            )
        return bool(result.rowcount)


def _registration_password_context(registration_id: str) -> str:
    return f"sip_registration/{registration_id}/password"


def hash_api_key(key: str) -> str:
    # Keys are 190 random bits, so a fast hash is enough (no password stretching needed).
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeyRepository:
    """Keys made with `callbridge api-keys create`, stored as a prefix and a SHA-256 hash."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, name: str, prefix: str, key: str) -> ApiKeyRow:
        row = ApiKeyRow(name=name, prefix=prefix, key_hash=hash_api_key(key), created=utcnow())
        async with self.db.session.begin() as session:
            session.add(row)
        return row

    async def verify(self, key: str) -> bool:
        prefix, dot, _ = key.partition(".")
        if not dot:
            return False
        async with self.db.session() as session:
            row = await session.scalar(select(ApiKeyRow).where(ApiKeyRow.prefix == prefix))
        return row is not None and hmac.compare_digest(row.key_hash, hash_api_key(key))

    async def all(self) -> list[ApiKeyRow]:
        """Every stored key, oldest first (rows hold the prefix and a hash, never the key)."""
        async with self.db.session() as session:
            return list(await session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.seq)))

    async def revoke(self, prefix: str) -> bool:
        """Deletes the key with this prefix; False if there is none. `verify` refuses it from then on."""
        async with self.db.session.begin() as session:
            result = await session.execute(delete(ApiKeyRow).where(ApiKeyRow.prefix == prefix))
        return bool(result.rowcount)
