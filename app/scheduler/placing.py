"""Placing one scheduled call: the agent's template and the call's spec, created and dialled like
`POST /api/agents/{agentId}/calls` (`create_and_dial`), recorded with its batch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.calls.service import Creation
from app.calls.start import create_and_dial
from app.errors import NotFound, ProviderFailed
from app.scheduler.store import Batch, ScheduledCall
from app.scheduler.webhook import WebhookFailed, deliver_call_started
from app.schemas.agents import CallTemplate
from app.schemas.calls import EndReason, StartAgentCallRequest
from app.store.tables import CallRow

if TYPE_CHECKING:
    from app.services import Services


async def place_call(services: Services, batch: Batch, scheduled: ScheduledCall) -> str:
    """Create and dial the scheduled call's Call; returns its id (ServiceError when it cannot be placed)."""
    agent = await services.agents.get(batch.agent_id)
    if agent is None:
        raise NotFound("agent_not_found", f"the batch's agent {batch.agent_id} no longer exists")
    request = StartAgentCallRequest.model_validate(scheduled.spec)
    medium = request.medium or CallTemplate.model_validate(agent.call_template).medium
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
