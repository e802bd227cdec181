"""Call lifecycle: create (from an agent template + context, or directly), end, sweep unjoined calls."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from app.calls.join_tokens import JoinTokens
from app.calls.templates import merge_context, render, validate_context
from app.errors import Conflict, InvalidInput, TooManyRequests
from app.events.log import CallEventLog
from app.metrics import CALLS_CREATED, CALLS_ENDED
from app.providers import get_provider
from app.providers.base import IncomingCall
from app.schemas.agents import CallTemplate
from app.schemas.base import ApiModel
from app.schemas.call_definition import CallDefinition
from app.schemas.calls import (
    Call,
    EndReason,
    EventSeverity,
    SipDetails,
    StartAgentCallRequest,
    StartCallRequest,
)
from app.schemas.media import (
    FirstSpeakerSettings,
    Medium,
    ProviderMedium,
    UserFirst,
    default_first_speaker,
)
from app.schemas.webhooks import WebhookEvent, public_callbacks
from app.settings import Settings
from app.store.repositories import CallLimitReached, CallRepository
from app.store.tables import AgentRow, CallRow, utcnow
from app.webhooks.callbacks import merged_callbacks

log = logging.getLogger(__name__)

BILLING_INCREMENT_S = 6.0  # billed per deciminute, rounded up
DEFAULT_MEDIUM = Medium(twilio=ProviderMedium())
#: Seconds a client is told to wait when every call slot is taken.
FULL_RETRY_AFTER_S = 5

#: Called once a call has ended (with the row as the ender saw it and the reason).
EndedHook = Callable[[CallRow, EndReason], None]


class CallEventSink(Protocol):
    """Told of each webhook event of a call as it happens (`app.webhooks.events` queues its deliveries)."""

    async def call_event(self, event: WebhookEvent, row: CallRow) -> None: ...


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


@dataclass(frozen=True, slots=True)
class Creation:
    """How a call is being created, beyond its definition: by whom and under which idempotency key."""

    origin: CallOrigin | None = None
    #: For a call callbridge dials: the provider's stream options and whether it signs the handshake.
    dial_stream_options: dict[str, Any] | None = None
    dial_stream_signed: bool = False
    idempotency_key: str | None = None
    fingerprint: str | None = None  # of the request, to refuse a reused key with another request
    #: A call the batch scheduler places: its batch and scheduled call (so the batch lists its Calls).
    batch_id: str | None = None
    scheduled_call_id: str | None = None


class CallService:
    def __init__(
        self, settings: Settings, calls: CallRepository, events: CallEventLog, tokens: JoinTokens
    ) -> None:
        self.settings = settings
        self.calls = calls
        self.events = events
        self.tokens = tokens
        self.ended_hooks: list[EndedHook] = []
        self.event_sinks: list[CallEventSink] = []
        #: Calls whose billing becomes final after their end (SIP calls running here: `billing_final`).
        self._billing_deferred: set[str] = set()

    # --- creation -----------------------------------------------------------------------------

    async def create_agent_call(
        self, agent: AgentRow, request: StartAgentCallRequest, creation: Creation = Creation()
    ) -> tuple[CallRow, bool]:
        """A call from `agent`'s template, with the request's overrides and context.

        Returns (the call, True) — or (the earlier call, False) when the idempotency key was used before.
        """
        origin = creation.origin
        template = CallTemplate.model_validate(agent.call_template)
        context = request.template_context
        if origin is not None:
            context = merge_context(origin.request_context, context)
        validate_context(context, template.context_schema)
        medium = request.medium or (Medium(**{origin.provider: {}}) if origin else None) or template.medium
        first_speaker = request.first_speaker_settings or _dialled_default(
            template.first_speaker_settings, medium
        )
        definition = CallDefinition(
            system_prompt=render(template.system_prompt, context),
            language_hint=render(template.language_hint, context) if template.language_hint else None,
            first_speaker_settings=first_speaker.to_json(),
            inactivity_messages=[
                {**m.to_json(), "message": render(m.message, context)} for m in template.inactivity_messages
            ],
            join_timeout=_given_or(request.join_timeout, template.join_timeout),
            max_duration=_given_or(request.max_duration, template.max_duration),
            pipeline=template.pipeline,
            template_context=context,
            request_context=origin.request_context if origin else None,
            metadata=request.metadata,
            callbacks=merged_callbacks(_json_or_none(template.callbacks), _json_or_none(request.callbacks)),
        )
        return await self._create(agent.id, medium, definition, creation)

    async def create_call(
        self, request: StartCallRequest, creation: Creation = Creation()
    ) -> tuple[CallRow, bool]:
        """A call without an agent (`POST /api/calls`); returns like `create_agent_call`."""
        first_speaker = request.first_speaker_settings
        if "first_speaker_settings" not in request.model_fields_set and request.medium is not None:
            first_speaker = _dialled_default(first_speaker, request.medium)
        definition = CallDefinition(
            system_prompt=request.system_prompt,
            language_hint=request.language_hint,
            first_speaker_settings=first_speaker.to_json(),
            inactivity_messages=[m.to_json() for m in request.inactivity_messages],
            join_timeout=request.join_timeout,
            max_duration=request.max_duration,
            pipeline=request.pipeline,
            metadata=request.metadata,
            callbacks=_json_or_none(request.callbacks),
        )
        return await self._create(None, request.medium, definition, creation)

    async def _create(
        self,
        agent_id: str | None,
        medium: Medium | None,
        definition: CallDefinition,
        creation: Creation,
    ) -> tuple[CallRow, bool]:
        origin = creation.origin
        medium = medium or DEFAULT_MEDIUM
        _check_supported(medium)
        if creation.idempotency_key is not None:
            earlier = await self.calls.by_idempotency_key(creation.idempotency_key)
            if earlier is not None:
                return _replayed(earlier, creation), False
        now = utcnow()
        outgoing = medium.options.get("outgoing")
        definition = definition.model_copy(
            update={
                "medium": medium.to_json(),
                "stream_options": origin.stream_options if origin else creation.dial_stream_options or {},
                "request_fingerprint": creation.fingerprint,
            }
        )
        row = CallRow(
            id=str(uuid.uuid4()),
            agent_id=agent_id,
            created=now,
            # A dialled call may ring for dial_ring_timeout before anyone can join it.
            join_deadline=now
            + timedelta(
                seconds=definition.join_timeout + (self.settings.dial_ring_timeout if outgoing else 0)
            ),
            medium_kind=medium.kind,
            provider_call_id=origin.incoming.provider_call_id if origin else None,
            from_number=origin.incoming.from_number if origin else (outgoing or {}).get("from"),
            to_number=origin.incoming.to_number if origin else (outgoing or {}).get("to"),
            stream_signature_required=bool(origin and origin.stream_signed) or creation.dial_stream_signed,
            idempotency_key=creation.idempotency_key,
            batch_id=creation.batch_id,
            scheduled_call_id=creation.scheduled_call_id,
            definition=definition,
        )
        row, created = await self._add_within_capacity(row)
        if not created:  # another request with the same key won the race
            return _replayed(row, creation), False
        CALLS_CREATED.labels(medium.kind).inc()
        text = f"call created by {origin.provider} webhook" if origin else "call created"
        self.events.record(row.id, row.created, "created", text, EventSeverity.DEBUG)
        await self._publish(WebhookEvent.STARTED, row)
        return row, True

    async def _add_within_capacity(self, row: CallRow) -> tuple[CallRow, bool]:
        """Insert the call unless its idempotency key was taken, counted against the live-call limit in
        the same step (CALLBRIDGE_MAX_CONCURRENT_CALLS): 429 when every slot is taken."""
        limit = self.settings.max_concurrent_calls
        try:
            return await self.calls.add_unless_key_taken(row, live_limit=limit)
        except CallLimitReached:
            raise TooManyRequests(
                "too_many_calls",
                f"{limit} calls are already live (CALLBRIDGE_MAX_CONCURRENT_CALLS); try again shortly",
                retry_after_s=FULL_RETRY_AFTER_S,
            ) from None

    # --- views --------------------------------------------------------------------------------

    def join_url(self, call_id: str) -> str:
        """Where a provider's media stream (or a serverWebSocket client) joins the call: a WebSocket URL."""
        return f"{self.settings.ws_base_url}/calls/{call_id}/stream/{self.tokens.token_for(call_id)}"

    def webrtc_join_url(self, call_id: str) -> str:
        """Where a webRtc call's client posts its SDP offer (WHIP): an HTTP(S) URL."""
        return f"{self.settings.base_url}/calls/{call_id}/webrtc/{self.tokens.token_for(call_id)}"

    def join_url_of(self, row: CallRow) -> str:
        """The call's joinUrl, as its medium is joined."""
        return self.webrtc_join_url(row.id) if row.medium_kind == "webRtc" else self.join_url(row.id)

    def to_schema(self, row: CallRow) -> Call:
        d = row.definition
        return Call(
            call_id=row.id,
            agent_id=row.agent_id,
            created=row.created,
            joined=row.joined,
            ended=row.ended,
            end_reason=EndReason(row.end_reason) if row.end_reason else None,
            medium=d.medium,
            join_url=self.join_url_of(row),
            metadata=d.metadata,
            system_prompt=d.system_prompt,
            language_hint=d.language_hint,
            template_context=d.template_context,
            request_context=d.request_context,
            first_speaker_settings=d.first_speaker_settings,
            inactivity_messages=d.inactivity_messages,
            join_timeout=d.join_timeout,
            max_duration=d.max_duration,
            billed_duration=billed_seconds(row.answered or row.joined, row.ended),
            sip_details=SipDetails(billed_duration=sip_billed_seconds(row))
            if row.medium_kind == "sip"
            else None,
            callbacks=public_callbacks(d.callbacks),
        )

    # --- joining and ending -------------------------------------------------------------------

    async def mark_joined(self, row: CallRow, stream_id: str, provider_call_id: str | None) -> bool:
        """Record that a stream joined the call; False when it was already joined or has ended."""
        joined = await self.calls.mark_joined(row.id, utcnow(), stream_id, provider_call_id)
        if joined:
            await self._publish(WebhookEvent.JOINED, row)
        return joined

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
        for hook in self.ended_hooks:
            try:
                hook(row, reason)
            except Exception:  # a hook's failure must not undo or hide the end
                log.exception("call %s: an end-of-call hook failed", row.id)
        await self._publish(WebhookEvent.ENDED, row)
        if row.id not in self._billing_deferred:
            await self._publish(WebhookEvent.BILLED, row)
        return True

    def defer_billing(self, call_id: str) -> None:
        """The call's billing is final only at `billing_final` (a SIP leg and bridge outlive its end)."""
        self._billing_deferred.add(call_id)

    async def billing_final(self, row: CallRow) -> None:
        """A deferred call's billing is final: `call.billed` (if the call has ended)."""
        self._billing_deferred.discard(row.id)
        current = await self.calls.get(row.id)
        if current is not None and current.ended is not None:
            await self._publish(WebhookEvent.BILLED, current)

    async def _publish(self, event: WebhookEvent, row: CallRow) -> None:
        for sink in self.event_sinks:
            try:
                await sink.call_event(event, row)
            except Exception:  # the call goes on; only its webhooks miss this event
                log.exception("call %s: %s could not be queued for its webhooks", row.id, event)

    async def sweep_unjoined(self) -> int:
        """End every call whose join deadline passed with endReason `unjoined`."""
        ended = 0
        for row in await self.calls.past_join_deadline(utcnow()):
            if await self.end(row, EndReason.UNJOINED, "nobody joined the call before its joinTimeout"):
                ended += 1
        return ended


def billed_seconds(start: datetime | None, ended: datetime | None) -> float:
    """Billed from answer (or join) to end, rounded up to the next deciminute; 0 until the call ended."""
    if start is None or ended is None:
        return 0.0
    seconds = max(0.0, (ended - start).total_seconds())
    return math.ceil(seconds / BILLING_INCREMENT_S) * BILLING_INCREMENT_S


def sip_billed_seconds(row: CallRow) -> float:
    """A SIP call's billing: its leg from the INVITE (the call is created as it arrives, or just before
    callbridge sends it) to its end, which a bridged transfer keeps up after the call ended, plus the
    transfers' second legs (`app.sip.transfer`)."""
    return billed_seconds(row.created, row.sip_ended or row.ended) + (row.sip_transfer_billed or 0.0)


def _json_or_none(model: ApiModel | None) -> dict[str, Any] | None:
    return None if model is None else model.to_json()


def _given_or(value: float | None, default: float) -> float:
    return default if value is None else value


#: Media carried by callbridge itself rather than a provider's stream.
OWN_MEDIA = frozenset({"sip", "webRtc"})


def _check_supported(medium: Medium) -> None:
    if medium.kind not in OWN_MEDIA and get_provider(medium.kind) is None:
        raise InvalidInput(
            "unsupported_medium", f"medium '{medium.kind}' is not supported by this server yet"
        )


def _dialled_default(first_speaker: FirstSpeakerSettings, medium: Medium | None) -> FirstSpeakerSettings:
    """Calls callbridge dials start with the callee ("Hello?") unless a first speaker was chosen."""
    if medium is not None and medium.options.get("outgoing") and first_speaker == default_first_speaker():
        return FirstSpeakerSettings(user=UserFirst())
    return first_speaker


def _replayed(row: CallRow, creation: Creation) -> CallRow:
    """The call an idempotency key already made, if the request is the same one."""
    earlier = row.definition.request_fingerprint
    if creation.fingerprint and earlier and earlier != creation.fingerprint:
        raise Conflict(
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request; use a new key for a new call",
        )
    return row
