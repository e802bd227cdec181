"""The provider's leg of a call: dialling it, following its status, hanging it up, transferring it, DTMF.

This is where call lifecycle meets a provider's REST API (`providers.control.CallControl`): it reads the
imported credentials, builds the requests' callback URLs, records what happened as call events, and ends
calls whose leg ended. It never parses provider JSON or XML itself.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx

from app.calls.service import CallService
from app.cluster.registry import CallRegistry
from app.errors import InvalidInput, ProviderFailed, ProviderOutcomeUnknown, ServiceError, TooManyRequests
from app.providers import get_provider
from app.providers.base import IncomingCall, WebhookProvider
from app.providers.control import (
    CallControl,
    DialRequest,
    LegState,
    LegStatus,
    ProviderLeg,
    StatusUpdate,
)
from app.providers.rest import ProviderApiError, RetryPolicy
from app.schemas.calls import EndReason, EventSeverity
from app.schemas.media import Medium, Outgoing
from app.schemas.telephony import TelephonyConfigBase
from app.settings import Settings
from app.store.repositories import CallRepository, TelephonyConfigRepository
from app.store.tables import CallRow, utcnow

log = logging.getLogger(__name__)

#: Why a call that never joined ended, by the leg's final status.
UNANSWERED_TEXT = {
    LegStatus.COMPLETED: "the call ended before its media stream joined",
    LegStatus.BUSY: "the callee was busy",
    LegStatus.NO_ANSWER: "nobody answered",
    LegStatus.FAILED: "the provider could not connect the call",
    LegStatus.CANCELED: "the call was canceled before it was answered",
}


class LiveSession(Protocol):
    """What the legs need from a live call session."""

    def far_end_left(self, text: str) -> None:
        """The provider reports the leg over (a hang-up, or the end of a transfer)."""
        ...


@dataclass(frozen=True, slots=True)
class Control:
    """A call's provider, its imported credentials and their REST client."""

    provider: WebhookProvider[Any]
    config: TelephonyConfigBase
    client: CallControl


@dataclass(frozen=True, slots=True)
class DialPlan:
    """A validated outgoing medium: who dials (with which credentials and client), and what."""

    control: Control
    outgoing: Outgoing
    additional_params: dict[str, Any]


class ProviderLegs:
    """Provider legs of all calls on this instance."""

    def __init__(
        self,
        settings: Settings,
        calls: CallService,
        repo: CallRepository,
        configs: TelephonyConfigRepository,
        sessions: CallRegistry[Any],
    ) -> None:
        self.settings = settings
        self.calls = calls
        self.repo = repo
        self.configs = configs
        self.sessions = sessions
        self.policy = RetryPolicy(
            attempts=settings.provider_attempts,
            max_delay_s=settings.provider_max_retry_wait,
            timeout_s=settings.provider_timeout,
        )
        self.http = httpx.AsyncClient(limits=httpx.Limits(max_connections=100, max_keepalive_connections=20))
        self._tasks: set[asyncio.Task[None]] = set()
        calls.ended_hooks.append(self._call_ended)

    async def stop(self) -> None:
        """Let hang-ups under way finish (briefly), then close the HTTP client."""
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=5)
            for task in pending:
                task.cancel()
        await self.http.aclose()

    # --- dialling -----------------------------------------------------------------------------

    async def plan_dial(self, medium: Medium | None, agent_id: str | None) -> DialPlan | None:
        """The dial a medium asks for (None when it has no `outgoing`); 400 when it cannot be placed."""
        if medium is None or not medium.options.get("outgoing"):
            return None
        provider = get_provider(medium.kind)
        if not isinstance(provider, WebhookProvider):
            raise InvalidInput("unsupported_medium", f"{medium.kind} calls cannot be dialled")
        control = await self._control_for(provider)
        if control is None:
            raise InvalidInput(
                "telephony_config_missing",
                f"outgoing {provider.name} calls need {provider.name} credentials: "
                f"POST /api/telephony_configs/{provider.name} first",
            )
        config = control.config
        if agent_id is not None and not config.allows_agent(agent_id):
            raise InvalidInput(
                "agent_not_allowed",
                f"agent {agent_id} may not create {provider.name} calls: add it to the {provider.name} "
                "config's callCreationAllowedAgentIds (or set callCreationAllowAllAgents)",
            )
        problem = provider.dial_problem(config)
        if problem is not None:
            raise InvalidInput("telephony_config_incomplete", problem)
        outgoing = Outgoing.model_validate(medium.options["outgoing"])
        try:
            params = control.client.additional_params(outgoing.additional_params)
        except ValueError as exc:
            raise InvalidInput("invalid_request", f"medium.{medium.kind}.outgoing.{exc}") from None
        return DialPlan(control, outgoing, params)

    async def dial(self, row: CallRow, plan: DialPlan) -> CallRow:
        """Ask the provider to place the call. Refused: the call ends (`unjoined`), the error says why."""
        provider, config = plan.control.provider, plan.control.config
        request = DialRequest(
            call_id=row.id,
            to=plan.outgoing.to,
            from_=plan.outgoing.from_,
            stream_xml=provider.connect_xml(self.calls.join_url(row.id), row.id, config),
            answer_url=self.callback_url(row.id, "answer"),
            status_url=self.callback_url(row.id, "status"),
            ring_timeout_s=self.settings.dial_ring_timeout,
            # The provider's own limit is a backstop: callbridge ends the call at maxDuration itself.
            time_limit_s=math.ceil(row.definition.max_duration) + 30,
            additional_params=plan.additional_params,
        )
        try:
            dialled = await plan.control.client.dial(request)
        except ProviderApiError as exc:
            self._record(row, "provider_error", exc.detail, EventSeverity.ERROR, _error_extras(exc))
            await self.calls.end(row, EndReason.UNJOINED, f"the call could not be placed: {exc.message}")
            raise _api_error(exc, f"{exc.detail} (call {row.id} ended)") from None
        values = {
            "provider_call_id": dialled.provider_call_id,
            "provider_request_id": dialled.provider_request_id,
            "provider_status": LegState.INITIATED,
        }
        await self.repo.update_leg(row.id, **values)
        for name, value in values.items():
            setattr(row, name, value)
        handle = dialled.provider_call_id or dialled.provider_request_id
        self._record(
            row,
            "dialled",
            f"{provider.name} is calling {plan.outgoing.to} from {plan.outgoing.from_} ({handle})",
            extras={"providerCallId": handle, "to": plan.outgoing.to, "from": plan.outgoing.from_},
        )
        return row

    def callback_url(self, call_id: str, kind: str, query: dict[str, str] | None = None) -> str:
        """Where the provider calls back about call `call_id`: `status`, `answer` or `transfer` (signed)."""
        url = f"{self.settings.base_url}/api/calls/{call_id}/telephony/{kind}"
        return f"{url}?{urlencode(query)}" if query else url

    # --- what the provider reports ------------------------------------------------------------

    async def answered(self, row: CallRow, incoming: IncomingCall) -> None:
        """The provider fetched the call's XML: the callee answered (and its call id is known now)."""
        if incoming.provider_call_id and incoming.provider_call_id != row.provider_call_id:
            await self.repo.update_leg(row.id, provider_call_id=incoming.provider_call_id)
        await self._mark_answered(row)

    async def status_update(self, row: CallRow, update: StatusUpdate) -> None:
        """A status callback: record it, remember it, and end the call when the leg has ended."""
        final = update.status.final
        if update.status is LegStatus.FAILED:
            severity = EventSeverity.WARNING
        elif final or update.status is LegStatus.ANSWERED:
            severity = EventSeverity.INFO
        else:  # initiated, ringing
            severity = EventSeverity.DEBUG
        text = f"{row.medium_kind} reports the call {update.provider_status}"
        self._record(
            row,
            "provider_status",
            text + (f" ({update.detail})" if update.detail else ""),
            severity,
            {
                "status": update.status.value,
                "providerStatus": update.provider_status,
                **({"detail": update.detail} if update.detail else {}),
                **({"durationS": update.duration_s} if update.duration_s is not None else {}),
            },
        )
        values: dict[str, Any] = {}
        if final or row.provider_status is None or not row.provider_status.handed_over:
            values["provider_status"] = LegState.reported(update.status)
        if update.provider_call_id and update.provider_call_id != row.provider_call_id:
            values["provider_call_id"] = update.provider_call_id
        if values:
            await self.repo.update_leg(row.id, **values)
        if update.status is LegStatus.ANSWERED:
            await self._mark_answered(row)
        if not final or row.ended is not None:
            return
        if row.joined is None:
            reason = UNANSWERED_TEXT[update.status]
            await self.calls.end(
                row, EndReason.UNJOINED, reason + (f": {update.detail}" if update.detail else "")
            )
            return
        text = f"the provider reports the call {update.provider_status}"
        session: LiveSession | None = self.sessions.get(row.id)
        if session is not None:
            session.far_end_left(text)
        else:  # its session is gone (or on an instance that died): the call is over all the same
            await self.calls.end(row, EndReason.HANGUP, text)

    async def _mark_answered(self, row: CallRow) -> None:
        if await self.repo.mark_answered(row.id, utcnow()):
            self._record(row, "answered", "the callee answered")

    # --- control ------------------------------------------------------------------------------

    async def transfer(
        self,
        call_id: str,
        target: str,
        *,
        sip_verb: str = "REFER",
        extra_headers: dict[str, str] | None = None,
        fallback_to_bridge: bool = False,
    ) -> str | None:
        """Hand the caller to `target`; None when the provider took it, else why not (the SIP options
        `sipVerb: INVITE` and `extraHeaders` are refused: a provider transfers with its own API)."""
        if sip_verb != "REFER" or extra_headers:
            return "sipVerb INVITE and extraHeaders apply to SIP calls only"
        row = await self.repo.get(call_id)
        found = await self._control(row) if row else None
        if row is None or found is None:
            return (
                f"transfers need the provider's imported credentials ({row.medium_kind if row else call_id})"
            )
        previous = row.provider_status
        # Mark first: the provider may end the stream before it answers the request, and the call's end
        # must then not hang up the leg being transferred.
        await self.repo.update_leg(call_id, provider_status=LegState.TRANSFERRING)
        try:
            await found.client.transfer(
                _leg(row), target, self.callback_url(call_id, "transfer", {"target": target})
            )
        except ProviderApiError as exc:
            await self.repo.update_leg(call_id, provider_status=previous)
            return exc.detail
        await self.repo.update_leg(call_id, provider_status=LegState.TRANSFERRED)
        return None

    async def send_dtmf(self, call_id: str, digits: str, tone_ms: int) -> tuple[bool, str | None]:
        """Send DTMF through the provider's API when it has one: (sent out-of-band, error if it failed)."""
        row = await self.repo.get(call_id)
        found = await self._control(row) if row else None
        if row is None or found is None or not found.client.out_of_band_dtmf:
            return False, None
        try:
            await found.client.send_dtmf(_leg(row), digits, tone_ms)
        except ProviderApiError as exc:
            return False, exc.detail
        return True, None

    def _call_ended(self, row: CallRow, reason: EndReason) -> None:
        """Hang up the provider leg of a call that ended on callbridge's side (not the caller's)."""
        if reason is EndReason.HANGUP:
            return
        task = asyncio.create_task(self._hang_up_leg(row.id), name=f"call-{row.id}-hang-up")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _hang_up_leg(self, call_id: str) -> None:
        row = await self.repo.get(call_id)
        if row is None or (row.provider_call_id is None and row.provider_request_id is None):
            return
        state = row.provider_status
        if state is not None and (state.handed_over or state.final):
            return
        found = await self._control(row)
        if found is None:
            return
        try:
            await found.client.hang_up(_leg(row))
        except ProviderApiError as exc:
            self._record(
                row, "provider_error", f"could not hang up the call: {exc.detail}", EventSeverity.WARNING
            )
            return
        except Exception:
            log.exception("call %s: hanging up the provider leg failed", call_id)
            return
        self._record(
            row, "provider_hang_up", f"asked {row.medium_kind} to hang up the call", EventSeverity.DEBUG
        )

    # --- helpers ------------------------------------------------------------------------------

    async def _control(self, row: CallRow) -> Control | None:
        """The REST control of the call's provider, when it has one and its credentials are imported."""
        provider = get_provider(row.medium_kind)
        return await self._control_for(provider) if isinstance(provider, WebhookProvider) else None

    async def _control_for(self, provider: WebhookProvider[Any]) -> Control | None:
        config = await self.configs.load(provider.name, provider.config_model)
        if config is None:
            return None
        return Control(provider, config, provider.call_control(config, self.http, self.policy))

    def _record(
        self,
        row: CallRow,
        type: str,
        text: str,
        severity: EventSeverity = EventSeverity.INFO,
        extras: dict[str, Any] | None = None,
    ) -> None:
        self.calls.events.record(row.id, row.created, type, text, severity, extras)


def _leg(row: CallRow) -> ProviderLeg:
    return ProviderLeg(
        row.provider_call_id,
        row.provider_request_id,
        answered=row.answered is not None or row.joined is not None,
    )


def _error_extras(exc: ProviderApiError) -> dict[str, Any]:
    return {"action": exc.action, "httpStatus": exc.status, "code": exc.code}


def _api_error(exc: ProviderApiError, detail: str) -> ServiceError:
    """A provider's refusal of the caller's input is a 400, its rate limit a 429, its trouble a 502."""
    if exc.status == 429:
        return TooManyRequests(
            "provider_rate_limited", detail, retry_after_s=math.ceil(exc.retry_after_s or 1)
        )
    if exc.outcome_unknown:
        return ProviderOutcomeUnknown("provider_outcome_unknown", detail)
    if exc.temporary:
        return ProviderFailed("provider_unavailable", detail)
    return InvalidInput("provider_rejected", detail)
