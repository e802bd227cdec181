"""Placing one scheduled call: the agent's template and the call's spec, created and dialled like
`POST /api/agents/{agentId}/calls` (`create_and_dial`), recorded with its batch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.calls.service import Creation
from app.calls.start import create_and_dial
from app.errors import NotFound
from app.scheduler.store import Batch, ScheduledCall
from app.schemas.agents import CallTemplate
from app.schemas.calls import StartAgentCallRequest

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
    return row.id
