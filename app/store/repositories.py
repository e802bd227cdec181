"""Data access: one small repository per table. No HTTP and no call logic here."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.pipeline.secret_options import PipelineSecrets, agent_owner, call_owner, plaintext_places
from app.schemas.sip import SipConfigFields
from app.store.db import Database
from app.store.paging import Cursor, PageResult, fetch_page
from app.store.secret_box import SecretBox
from app.store.tables import (
    AgentRow,
    ApiKeyRow,
    CallEventRow,
    CallRow,
    SipConfigRow,
    TelephonyConfigRow,
    utcnow,
)

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


def _with_sealed_pipeline(
    secrets: PipelineSecrets | None, template: dict[str, Any], owner: str
) -> dict[str, Any]:
    if "pipeline" not in template:
        return template
    return {**template, "pipeline": sealed_pipeline(secrets, template["pipeline"], owner)}


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
        row.definition = row.definition.model_copy(update={"pipeline": pipeline})

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

    async def mark_answered(self, call_id: str, when: datetime) -> bool:
        """Record the callee's answer once; False when it was recorded before or the call has ended."""
        async with self.db.session.begin() as session:
            result = await session.execute(
                update(CallRow)
                .where(CallRow.id == call_id, CallRow.answered.is_(None), CallRow.ended.is_(None))
                .values(answered=when)
            )
        return result.rowcount == 1

    async def past_join_deadline(self, now: datetime, limit: int = 500) -> list[CallRow]:
        """Calls never joined whose join deadline has passed (joining or ending clears the deadline)."""
        async with self.db.session() as session:
            rows = await session.scalars(
                select(CallRow)
                .where(CallRow.join_deadline.is_not(None), CallRow.join_deadline <= now)
                .limit(limit)
            )
            return list(rows)


class EventRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_many(self, rows: Sequence[CallEventRow]) -> None:
        async with self.db.session.begin() as session:
            session.add_all(rows)

    async def page(
        self, call_id: str, severities: Sequence[str], cursor: Cursor | None, page_size: int
    ) -> PageResult:
        query = select(CallEventRow).where(
            CallEventRow.call_id == call_id, CallEventRow.severity.in_(severities)
        )
        async with self.db.session() as session:
            return await fetch_page(
                session, query, CallEventRow.seq, newest_first=False, cursor=cursor, page_size=page_size
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
    """The account SIP config: one row; without it (never migrated that far) a fresh install's defaults."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self) -> SipConfigFields:
        async with self.db.session() as session:
            row = await session.get(SipConfigRow, SIP_CONFIG_ROW_ID)
        if row is None:
            return SipConfigFields()
        return SipConfigFields.model_validate(
            {
                "allowedCidrRanges": row.allowed_cidr_ranges,
                "allowAllAgents": row.allow_all_agents,
                "allowedAgents": row.allowed_agents,
            }
        )

    async def update(self, config: SipConfigFields) -> SipConfigFields:
        """Store `config` in place of the current one; returns it."""
        stored = config.model_dump(mode="json", by_alias=True)
        async with self.db.session.begin() as session:
            row = await session.get(SipConfigRow, SIP_CONFIG_ROW_ID)
            if row is None:
                row = SipConfigRow(id=SIP_CONFIG_ROW_ID)
                session.add(row)
            row.allowed_cidr_ranges = stored["allowedCidrRanges"]
            row.allow_all_agents = stored["allowAllAgents"]
            row.allowed_agents = stored["allowedAgents"]
            row.updated = utcnow()
        return config


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
