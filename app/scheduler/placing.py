"""Placing one scheduled call: the agent's template and the call's spec, created and dialled like
`POST /api/agents/{agentId}/calls` (`create_and_dial`), recorded with its batch; and reconciling a dial
whose outcome a crash left unknown with the provider's call list."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from app.calls.service import Creation
from app.calls.start import create_and_dial
from app.errors import NotFound, ProviderFailed, ServiceError
from app.providers.control import LegState
from app.providers.rest import ProviderApiError
from app.scheduler.store import Batch, ScheduledCall
from app.scheduler.webhook import WebhookFailed, deliver_call_started
from app.schemas.agents import CallTemplate
from app.schemas.calls import EndReason, StartAgentCallRequest
from app.schemas.media import Medium
from app.store.tables import CallRow

if TYPE_CHECKING:
    from app.services import Services

#: How much earlier than the recorded dial a provider's record of it may be dated (clocks, whole seconds).
CLOCK_MARGIN = timedelta(seconds=2)


#: Spec fields that say when to dial, not what the call is.
SCHEDULING_FIELDS = frozenset({"timezone", "callingHours"})


def call_request(spec: dict[str, Any]) -> StartAgentCallRequest:
    """The Call a scheduled call's spec asks for (its scheduling fields left out)."""
    return StartAgentCallRequest.model_validate({k: v for k, v in spec.items() if k not in SCHEDULING_FIELDS})


async def place_call(services: Services, batch: Batch, scheduled: ScheduledCall) -> str:
    """Create and dial the scheduled call's Call; returns its id (ServiceError when it cannot be placed)."""
    agent = await services.agents.get(batch.agent_id)
    if agent is None:
        raise NotFound("agent_not_found", f"the batch's agent {batch.agent_id} no longer exists")
    request = call_request(scheduled.spec)
    medium = _medium(request, agent.call_template)
    creation = Creation(batch_id=batch.id, scheduled_call_id=scheduled.id)
    row, _ = await create_and_dial(
        services,
        medium,
        agent.id,
        lambda given: services.calls.create_agent_call(agent, request, given),
        creation,
    )
    if medium is None or not medium.options.get("outgoing"):
        await _hand_to_webhook(services, batch, row)
    return row.id


async def _hand_to_webhook(services: Services, batch: Batch, row: CallRow) -> None:
    """A call callbridge does not dial: the batch's webhook connects it, or it ends (ERROR)."""
    stored = await services.batches.get_by_id(batch.id)
    url = stored.webhook_url if stored is not None else None
    try:
        if url is None:
            raise WebhookFailed("the batch has no webhookUrl to connect the call")
        secret = services.batches.webhook_secret(stored) if stored is not None else None
        await deliver_call_started(services.legs.http, url, secret, services.calls.to_schema(row).to_json())
    except WebhookFailed as exc:
        await services.calls.end(row, EndReason.UNJOINED, str(exc))
        raise ProviderFailed("webhook_failed", str(exc)) from None


def _medium(request: StartAgentCallRequest, call_template: dict) -> Medium | None:
    return request.medium or CallTemplate.model_validate(call_template).medium


class Settled(StrEnum):
    """What reconciling an unknown dial found."""

    DIALLED = "dialled"  # the provider has the call: recorded, never dialled again
    NOT_DIALLED = "not_dialled"  # provably no dial went out: dial as usual
    UNKNOWN = "unknown"  # the provider cannot settle it: the scheduled call ends ERROR, never redialled


@dataclass(frozen=True, slots=True)
class Reconciliation:
    outcome: Settled
    detail: str
    call_id: str | None = None  # DIALLED: the Call the dial belongs to


async def reconcile_call(services: Services, batch: Batch, scheduled: ScheduledCall) -> Reconciliation:
    """Settle a dial recorded `dialling` whose outcome is unknown (its instance stopped mid-dial).

    No Call created since the dial began: the request never went out. A Call with the provider's id
    recorded: it was dialled. Otherwise the provider's call list is asked for a call to the number since the
    dial began (other than the scheduled call's earlier dials): found, it is recorded on the Call; provably
    none, the Call (never dialled) ends; the provider unreachable or without such a list: unknown.
    """
    since = scheduled.dial_started
    calls = await services.batches.calls_of(scheduled.id)
    latest = calls[0] if calls else None
    if latest is None or (since is not None and latest.created < since):
        return Reconciliation(Settled.NOT_DIALLED, "no Call was created for the dial")
    if since is None:  # marked dialling before its start was recorded (migration 0009)
        if latest.provider_call_id or latest.provider_request_id:
            return Reconciliation(Settled.DIALLED, "the provider's answer was recorded", latest.id)
        return Reconciliation(Settled.UNKNOWN, "the dial's start was not recorded")
    if latest.provider_call_id or latest.provider_request_id:
        return Reconciliation(Settled.DIALLED, "the provider's answer was recorded", latest.id)
    agent = await services.agents.get(batch.agent_id)
    if agent is None:
        return Reconciliation(Settled.UNKNOWN, f"the batch's agent {batch.agent_id} no longer exists")
    try:
        medium = _medium(call_request(scheduled.spec), agent.call_template)
        plan = await services.legs.plan_dial(medium, agent.id)
    except ServiceError as exc:
        return Reconciliation(Settled.UNKNOWN, f"the dial cannot be looked up: {exc.detail}")
    if plan is None:
        return Reconciliation(Settled.UNKNOWN, "the call was not dialled through a provider's REST API")
    to, from_ = plan.outgoing.to, plan.outgoing.from_
    try:
        lookup = await plan.control.client.find_dialled(to, from_, since - CLOCK_MARGIN)
    except NotImplementedError as exc:
        return Reconciliation(Settled.UNKNOWN, str(exc))
    except ProviderApiError as exc:
        return Reconciliation(Settled.UNKNOWN, exc.detail)
    earlier = {id_ for row in calls[1:] for id_ in (row.provider_call_id, row.provider_request_id) if id_}
    found = [sid for sid in lookup.provider_call_ids if sid not in earlier]
    requested = [rid for rid in lookup.request_ids if rid not in earlier]
    if found or requested:
        ids = {"provider_call_id": found[0]} if found else {"provider_request_id": requested[0]}
        await services.calls_repo.update_leg(latest.id, **ids, provider_status=LegState.INITIATED)
        listed = next(iter(ids.values()))
        return Reconciliation(Settled.DIALLED, f"{plan.control.provider.name} lists call {listed}", latest.id)
    if latest.ended is None:
        await services.calls.end(latest, EndReason.UNJOINED, "the dial never reached the provider")
    return Reconciliation(
        Settled.NOT_DIALLED, f"{plan.control.provider.name} lists no call to {to} since {since}"
    )
