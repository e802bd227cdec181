"""Call requests and the Call resource."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from app.schemas.base import ApiModel
from app.schemas.durations import Duration, PositiveDuration
from app.schemas.media import CallSettings, FirstSpeakerSettings, Medium
from app.schemas.webhooks import Callbacks

RESERVED_METADATA_PREFIX = "callbridge."


class EndReason(StrEnum):
    UNJOINED = "unjoined"
    HANGUP = "hangup"
    AGENT_HANGUP = "agent_hangup"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    SYSTEM_ERROR = "system_error"


def _check_metadata(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if key.startswith(RESERVED_METADATA_PREFIX):
            raise ValueError(
                f"metadata key {key!r}: keys starting with '{RESERVED_METADATA_PREFIX}' are reserved"
            )
    return value


Metadata = Annotated[dict[str, str], AfterValidator(_check_metadata)]


class StartAgentCallRequest(ApiModel):
    """`POST /api/agents/{agentId}/calls`: what a call may override in its agent's template."""

    template_context: dict[str, Any] = Field(default_factory=dict)
    metadata: Metadata = Field(default_factory=dict)
    medium: Medium | None = None
    join_timeout: PositiveDuration | None = None
    max_duration: PositiveDuration | None = None
    first_speaker_settings: FirstSpeakerSettings | None = None
    #: Replaces the template's callbacks (each of joined/ended/billed given here wins over the template's).
    callbacks: Callbacks | None = None


class StartCallRequest(CallSettings):
    """`POST /api/calls`: a call without an agent."""

    metadata: Metadata = Field(default_factory=dict)


class SipDetails(ApiModel):
    """A SIP call's own billing: from the INVITE (received, or sent) to the end, per deciminute rounded up;
    a transfer's second leg adds its own (a bridge bills both legs while both are up)."""

    billed_duration: Duration


class Call(ApiModel):
    call_id: str
    agent_id: str | None
    created: datetime
    joined: datetime | None
    ended: datetime | None
    end_reason: EndReason | None
    medium: dict[str, Any]
    join_url: str | None
    metadata: dict[str, str]
    system_prompt: str
    language_hint: str | None = None
    template_context: dict[str, Any]
    request_context: dict[str, Any] | None = None
    first_speaker_settings: dict[str, Any]
    inactivity_messages: list[dict[str, Any]] = Field(default_factory=list)
    join_timeout: Duration
    max_duration: Duration
    billed_duration: Duration
    #: SIP calls only (null for the others).
    sip_details: SipDetails | None = None
    #: The call's callbacks, each secret shown as its prefix (`secretPrefixes`).
    callbacks: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        # Lifecycle fields are always present (null until they happen), as in Ultravox.
        return self.model_dump(mode="json", by_alias=True)


class EventSeverity(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return list(EventSeverity).index(self)


class SipLogEntry(ApiModel):
    """One SIP message of a call (`GET /api/calls/{callId}/sip_logs`), credentials redacted."""

    timestamp: datetime
    direction: Literal["in", "out"]
    #: `transport:host:port` it came from or went to.
    peer: str
    #: The whole message as text (at most 8 KiB kept).
    message: str


class CallEvent(ApiModel):
    call_id: str
    call_timestamp: Duration  # since the call was created
    wall_clock_timestamp: datetime
    severity: EventSeverity
    type: str
    text: str
    extras: dict[str, Any] = Field(default_factory=dict)
