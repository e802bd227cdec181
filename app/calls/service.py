"""Call lifecycle: create (from an agent template + context, or directly), end, sweep unjoined calls."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from app.calls.join_tokens import JoinTokens
from app.calls.templates import merge_context, render, validate_context
from app.errors import InvalidInput
from app.events.log import CallEventLog
from app.metrics import CALLS_CREATED, CALLS_ENDED
from app.providers import get_provider
from app.providers.base import IncomingCall
from app.schemas.agents import CallTemplate
from app.schemas.calls import Call, EndReason, EventSeverity, StartAgentCallRequest, StartCallRequest
from app.schemas.media import Medium, ProviderMedium
from app.settings import Settings
from app.store.repositories import CallRepository
from app.store.tables import AgentRow, CallRow, utcnow

BILLING_INCREMENT_S = 6.0  # billed per deciminute, rounded up
DEFAULT_MEDIUM = Medium(twilio=ProviderMedium())


@dataclass(frozen=True, slots=True)
class CallOrigin:
    """Where a call came from when a provider created it (an incoming-call webhook)."""

    provider: str
    incoming: IncomingCall
    request_context: dict[str, Any] = field(default_factory=dict)
    #: The provider's stream options chosen by its telephony config (codec, byte order), for the framing.
    stream_options: dict[str, Any] = field(default_factory=dict)
    #: The provider signs the stream's handshake: a join must carry a valid signature.
    stream_signed: bool = False


class CallService:
    def __init__(
        self, settings: Settings, calls: CallRepository, events: CallEventLog, tokens: JoinTokens
    ) -> None:
        self.settings = settings
        self.calls = calls
        self.events = events
        self.tokens = tokens

    # --- creation -----------------------------------------------------------------------------

    async def create_agent_call(
        self, agent: AgentRow, request: StartAgentCallRequest, origin: CallOrigin | None = None
    ) -> CallRow:
        """A call from `agent`'s template, with the request's overrides and context."""
        template = CallTemplate.model_validate(agent.call_template)
        context = request.template_context
        if origin is not None:
            context = merge_context(origin.request_context, context)
        validate_context(context, template.context_schema)
        medium = request.medium or (Medium(**{origin.provider: {}}) if origin else None) or template.medium
        first_speaker = request.first_speaker_settings or template.first_speaker_settings
        definition = {
            "systemPrompt": render(template.system_prompt, context),
            "languageHint": render(template.language_hint, context) if template.language_hint else None,
            "firstSpeakerSettings": first_speaker.to_json(),
            "inactivityMessages": [
                {**m.to_json(), "message": render(m.message, context)} for m in template.inactivity_messages
            ],
            "joinTimeout": _given_or(request.join_timeout, template.join_timeout),
            "maxDuration": _given_or(request.max_duration, template.max_duration),
            "pipeline": template.pipeline,
            "templateContext": context,
            "requestContext": origin.request_context if origin else None,
            "metadata": request.metadata,
        }
        return await self._create(agent.id, medium, definition, origin)

    async def create_call(self, request: StartCallRequest) -> CallRow:
        """A call without an agent (`POST /api/calls`)."""
        definition = {
            "systemPrompt": request.system_prompt,
            "languageHint": request.language_hint,
            "firstSpeakerSettings": request.first_speaker_settings.to_json(),
            "inactivityMessages": [m.to_json() for m in request.inactivity_messages],
            "joinTimeout": request.join_timeout,
            "maxDuration": request.max_duration,
            "pipeline": request.pipeline,
            "templateContext": {},
            "requestContext": None,
            "metadata": request.metadata,
        }
        return await self._create(None, request.medium, definition, None)

    async def _create(
        self,
        agent_id: str | None,
        medium: Medium | None,
        definition: dict[str, Any],
        origin: CallOrigin | None,
    ) -> CallRow:
        medium = medium or DEFAULT_MEDIUM
        _check_supported(medium)
        now = utcnow()
        definition["medium"] = medium.to_json()
        definition["streamOptions"] = origin.stream_options if origin else {}
        row = CallRow(
            id=str(uuid.uuid4()),
            agent_id=agent_id,
            created=now,
            join_deadline=now + timedelta(seconds=definition["joinTimeout"]),
            medium_kind=medium.kind,
            provider_call_id=origin.incoming.provider_call_id if origin else None,
            from_number=origin.incoming.from_number if origin else None,
            to_number=origin.incoming.to_number if origin else None,
            stream_signature_required=bool(origin and origin.stream_signed),
            definition=definition,
        )
        await self.calls.add(row)
        CALLS_CREATED.labels(medium.kind).inc()
        text = f"call created by {origin.provider} webhook" if origin else "call created"
        self.events.record(row.id, row.created, "created", text, EventSeverity.DEBUG)
        return row

    # --- views --------------------------------------------------------------------------------

    def join_url(self, call_id: str) -> str:
        return f"{self.settings.ws_base_url}/calls/{call_id}/stream/{self.tokens.token_for(call_id)}"

    def to_schema(self, row: CallRow) -> Call:
        d = row.definition
        return Call(
            call_id=row.id,
            agent_id=row.agent_id,
            created=row.created,
            joined=row.joined,
            ended=row.ended,
            end_reason=EndReason(row.end_reason) if row.end_reason else None,
            medium=d["medium"],
            join_url=self.join_url(row.id),
            metadata=d.get("metadata") or {},
            system_prompt=d.get("systemPrompt", ""),
            language_hint=d.get("languageHint"),
            template_context=d.get("templateContext") or {},
            request_context=d.get("requestContext"),
            first_speaker_settings=d.get("firstSpeakerSettings") or {},
            inactivity_messages=d.get("inactivityMessages") or [],
            join_timeout=d["joinTimeout"],
            max_duration=d["maxDuration"],
            billed_duration=billed_seconds(row.joined, row.ended),
        )

    # --- joining and ending -------------------------------------------------------------------

    async def mark_joined(self, row: CallRow, stream_id: str, provider_call_id: str | None) -> bool:
        """Record that a stream joined the call; False when it was already joined or has ended."""
        return await self.calls.mark_joined(row.id, utcnow(), stream_id, provider_call_id)

    async def end(self, row: CallRow, reason: EndReason, text: str) -> bool:
        """End the call once (the first reason wins); records the `ended` event. True if this ended it."""
        await self.events.flush()  # everything that happened during the call is stored before `ended`
        if not await self.calls.mark_ended(row.id, utcnow(), reason.value):
            return False
        CALLS_ENDED.labels(reason.value).inc()
        self.events.record(
            row.id, row.created, "ended", text, EventSeverity.INFO, {"endReason": reason.value}
        )
        await self.events.flush()
        return True

    async def sweep_unjoined(self) -> int:
        """End every call whose join deadline passed with endReason `unjoined`."""
        ended = 0
        for row in await self.calls.past_join_deadline(utcnow()):
            if await self.end(row, EndReason.UNJOINED, "nobody joined the call before its joinTimeout"):
                ended += 1
        return ended


def billed_seconds(joined: datetime | None, ended: datetime | None) -> float:
    """Billed from join to end, rounded up to the next deciminute; 0 until the call has ended."""
    if joined is None or ended is None:
        return 0.0
    seconds = max(0.0, (ended - joined).total_seconds())
    return math.ceil(seconds / BILLING_INCREMENT_S) * BILLING_INCREMENT_S


def _given_or(value: float | None, default: float) -> float:
    return default if value is None else value


def _check_supported(medium: Medium) -> None:
    provider = get_provider(medium.kind)
    if provider is None:
        raise InvalidInput(
            "unsupported_medium", f"medium '{medium.kind}' is not supported by this server yet"
        )
    options = medium.options
    if options.get("outgoing"):
        raise InvalidInput(
            "unsupported_medium", f"outgoing {medium.kind} calls are not supported by this server yet"
        )
