"""SQLAlchemy tables. Public ids are UUID strings; `seq` is an internal, ever-increasing key for paging."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from app.providers.control import LegState
from app.schemas.call_definition import CallDefinition

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Json = JSON().with_variant(JSONB(), "postgresql")


class CallDefinitionJson(TypeDecorator[CallDefinition]):
    """A call's definition: a typed model in Python, its camelCase JSON in the database."""

    impl = Json
    cache_ok = True

    def process_bind_param(self, value: CallDefinition | None, dialect: Dialect) -> dict[str, Any] | None:
        return None if value is None else value.to_stored()

    def process_result_value(self, value: dict[str, Any] | None, dialect: Dialect) -> CallDefinition | None:
        return None if value is None else CallDefinition.model_validate(value)


Seq = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements only INTEGER keys


def _enum_values(enum: type[StrEnum]) -> list[str]:
    """Enum columns store the members' values ("no-answer"), not their names."""
    return [member.value for member in enum]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class AgentRow(Base):
    __tablename__ = "agents"

    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(64))
    call_template: Mapped[dict[str, Any]] = mapped_column(Json)
    created: Mapped[datetime] = mapped_column(UtcDateTime)
    updated: Mapped[datetime] = mapped_column(UtcDateTime)


class CallRow(Base):
    __tablename__ = "calls"

    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True, index=True)
    agent_id: Mapped[str | None] = mapped_column(String(36), index=True)
    created: Mapped[datetime] = mapped_column(UtcDateTime)
    joined: Mapped[datetime | None] = mapped_column(UtcDateTime)
    ended: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    end_reason: Mapped[str | None] = mapped_column(String(32))
    # Set while the call waits to be joined; the sweeper ends calls whose deadline passed.
    join_deadline: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    medium_kind: Mapped[str] = mapped_column(String(32))
    provider_call_id: Mapped[str | None] = mapped_column(String(128))
    # Dialled calls: the provider's id for the dial request (Plivo's request_uuid, before a CallUUID exists),
    # the provider's last reported status, and when the callee answered (billing counts from there).
    provider_request_id: Mapped[str | None] = mapped_column(String(128))
    provider_status: Mapped[LegState | None] = mapped_column(
        Enum(LegState, native_enum=False, length=32, values_callable=_enum_values, validate_strings=True)
    )
    answered: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # `Idempotency-Key` of the creating request, with the account's scope: the same key gives the same call.
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True, index=True)
    from_number: Mapped[str | None] = mapped_column(String(128))
    to_number: Mapped[str | None] = mapped_column(String(128))
    stream_id: Mapped[str | None] = mapped_column(String(128))
    # The stream handshake must carry the provider's signature (calls created from a signed webhook).
    stream_signature_required: Mapped[bool] = mapped_column(Boolean, default=False)
    # systemPrompt, languageHint, firstSpeakerSettings, timeouts, medium, pipeline, contexts, metadata.
    definition: Mapped[CallDefinition] = mapped_column(CallDefinitionJson)
    # A call a scheduled batch placed: the batch, and which of its scheduled calls this dial was.
    batch_id: Mapped[str | None] = mapped_column(String(36), index=True)
    scheduled_call_id: Mapped[str | None] = mapped_column(String(36), index=True)
    # SIP transfers (issue 12, XFER): when the caller's leg ended, when a bridge kept it up after the call
    # ended; and the seconds billed for transfers' second legs (each from its INVITE to its end).
    sip_ended: Mapped[datetime | None] = mapped_column(UtcDateTime)
    sip_transfer_billed: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")


class CallEventRow(Base):
    __tablename__ = "call_events"

    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(36), index=True)
    wall_clock: Mapped[datetime] = mapped_column(UtcDateTime)
    call_offset: Mapped[float] = mapped_column(Float)
    severity: Mapped[str] = mapped_column(String(8))
    type: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    extras: Mapped[dict[str, Any]] = mapped_column(Json)


class TelephonyConfigRow(Base):
    __tablename__ = "telephony_configs"

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    public: Mapped[dict[str, Any]] = mapped_column(Json)
    secrets: Mapped[dict[str, str]] = mapped_column(Json)  # field name → SecretBox token
    created: Mapped[datetime] = mapped_column(UtcDateTime)
    updated: Mapped[datetime] = mapped_column(UtcDateTime)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16), unique=True, index=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(UtcDateTime)


class SipConfigRow(Base):
    """The account SIP config: a single row (`id` 1), created by migration 0004."""

    __tablename__ = "sip_config"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    allowed_cidr_ranges: Mapped[list[str]] = mapped_column(Json)
    allow_all_agents: Mapped[bool] = mapped_column(Boolean)
    allowed_agents: Mapped[list[dict[str, str]]] = mapped_column(Json)  # [{agentId, toUserPattern}]
    updated: Mapped[datetime] = mapped_column(UtcDateTime)
    # {url, secrets: [SecretBox tokens]}, or None (migration 0007).
    fallback_handler: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)


class ScheduledBatchRow(Base):
    """A batch of outbound calls for one agent (`/api/agents/{agentId}/scheduled_batches`)."""

    __tablename__ = "scheduled_batches"

    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True, index=True)
    agent_id: Mapped[str] = mapped_column(String(36), ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    created: Mapped[datetime] = mapped_column(UtcDateTime)
    window_start: Mapped[datetime | None] = mapped_column(UtcDateTime)
    window_end: Mapped[datetime | None] = mapped_column(UtcDateTime)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    max_concurrency: Mapped[int | None] = mapped_column(Integer)
    calls_per_minute: Mapped[float | None] = mapped_column(Float)
    retry: Mapped[dict[str, Any] | None] = mapped_column(Json)  # {maxAttempts, backoff}
    timezone: Mapped[str | None] = mapped_column(String(64))  # its calls' default (IANA)
    calling_hours: Mapped[dict[str, str] | None] = mapped_column(Json)  # {start, end} as "HH:MM"
    webhook_url: Mapped[str | None] = mapped_column(String(200))
    webhook_secret: Mapped[str | None] = mapped_column(Text)  # a SecretBox token
    total_count: Mapped[int] = mapped_column(Integer, default=0)
    completed_count: Mapped[int] = mapped_column(Integer, default=0)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ScheduledCallRow(Base):
    """One call of a batch: its spec, its fate, and the lease under which an instance dials it."""

    __tablename__ = "scheduled_calls"
    __table_args__ = (
        Index("ix_scheduled_calls_batch_id", "batch_id", "seq"),
        # What claim_due looks for: a batch's calls in one status, due first.
        Index("ix_scheduled_calls_status", "batch_id", "status", "next_attempt_at"),
    )

    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True, index=True)
    batch_id: Mapped[str] = mapped_column(String(36), ForeignKey("scheduled_batches.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # FUTURE, PENDING, SUCCESS, EXPIRED, ERROR
    spec: Mapped[dict[str, Any]] = mapped_column(Json)  # {medium?, templateContext, metadata}
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # dials recorded (mark_dialling)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # none (not dialled under this claim), dialling (the provider request may have gone out), dialled.
    dial_state: Mapped[str] = mapped_column(String(16), default="none")
    # When the latest dial was recorded (dialling): a reconciliation asks the provider for calls since then.
    dial_started: Mapped[datetime | None] = mapped_column(UtcDateTime)
    call_id: Mapped[str | None] = mapped_column(String(36))  # the latest Call made for it
    error: Mapped[str | None] = mapped_column(Text)
    updated: Mapped[datetime] = mapped_column(UtcDateTime)


class BatchEventRow(Base):
    """Something that happened to a batch or one of its calls (`GET …/scheduled_batches/{id}/events`)."""

    __tablename__ = "batch_events"
    __table_args__ = (Index("ix_batch_events_batch_id", "batch_id", "seq"),)

    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(36))
    scheduled_call_id: Mapped[str | None] = mapped_column(String(36))
    call_id: Mapped[str | None] = mapped_column(String(36))
    wall_clock: Mapped[datetime] = mapped_column(UtcDateTime)
    severity: Mapped[str] = mapped_column(String(8))
    type: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    extras: Mapped[dict[str, Any]] = mapped_column(Json)


class SipMessageRow(Base):
    """One SIP message of a call (`GET /api/calls/{callId}/sip_logs`), credentials redacted."""

    __tablename__ = "sip_messages"
    __table_args__ = (Index("ix_sip_messages_call_id", "call_id", "seq"),)

    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(36))
    wall_clock: Mapped[datetime] = mapped_column(UtcDateTime)
    direction: Mapped[str] = mapped_column(String(3))  # "in" | "out"
    peer: Mapped[str] = mapped_column(String(128))  # "udp:203.0.113.5:5060"
    text: Mapped[str] = mapped_column(Text)


class SipRegistrationRow(Base):
    """One registration of callbridge as a user on a PBX (`/api/sip/registrations`) and its last outcome."""

    __tablename__ = "sip_registrations"

    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True, index=True)
    created: Mapped[datetime] = mapped_column(UtcDateTime)
    username: Mapped[str] = mapped_column(String(60))
    password: Mapped[str] = mapped_column(Text)  # a SecretBox token
    proxy: Mapped[str] = mapped_column(String(100))
    outbound_proxy: Mapped[str | None] = mapped_column(String(100))
    auth_user: Mapped[str | None] = mapped_column(String(60))
    tls_verify: Mapped[bool] = mapped_column(Boolean, default=True)
    # Null until the registrar first answers; then whether its last answer granted the binding.
    successful: Mapped[bool | None] = mapped_column(Boolean)
    last_error: Mapped[str | None] = mapped_column(String(200))
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class WebhookRow(Base):
    """An account webhook (`/api/webhooks`): where call events go, and how its deliveries are faring."""

    __tablename__ = "webhooks"

    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True, index=True)
    created: Mapped[datetime] = mapped_column(UtcDateTime)
    url: Mapped[str] = mapped_column(String(200))
    events: Mapped[list[str]] = mapped_column(Json)
    agent_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("agents.id", ondelete="CASCADE"))
    secrets: Mapped[list[str]] = mapped_column(Json)  # SecretBox tokens
    status: Mapped[str] = mapped_column(String(16), default="normal")  # normal | unhealthy
    last_status_change: Mapped[datetime | None] = mapped_column(UtcDateTime)
    recent_failures: Mapped[list[dict[str, str]]] = mapped_column(Json)  # [{timestamp, failure}], newest last


class WebhookDeliveryRow(Base):
    """The outbox: one event for one destination (a webhook or a call's callback), kept until delivered.

    Written when the event happens, before anything is sent; an instance claims a due row under a lease,
    POSTs it and marks it delivered, or schedules the next attempt (`failed` once the retries ran out).
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    webhook_id: Mapped[str | None] = mapped_column(String(36), index=True)  # None: a call's callback
    call_id: Mapped[str] = mapped_column(String(36), index=True)
    event: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(String(200))
    secrets: Mapped[list[str]] = mapped_column(Json)  # SecretBox tokens bound to this delivery
    body: Mapped[str] = mapped_column(Text)  # the exact JSON that is signed and sent
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(String(200))
    created: Mapped[datetime] = mapped_column(UtcDateTime)
    delivered: Mapped[datetime | None] = mapped_column(UtcDateTime)
