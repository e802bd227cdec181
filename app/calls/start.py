"""Starting a call: plan its dial, create it, and dial it when it is outgoing (the API and the scheduler)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from app.calls.service import Creation
from app.cluster.base import cluster_unavailable
from app.errors import InvalidInput, Unavailable
from app.schemas.media import Medium
from app.sip.outgoing import SipDialPlan
from app.store.tables import CallRow

if TYPE_CHECKING:
    from app.services import Services

#: What a client refused during a drain is told to wait (another instance, or this one restarted).
DRAIN_RETRY_AFTER_S = 5

#: Creates the call row (from an agent template or directly) for a Creation: (the call, created).
CreateCall = Callable[[Creation], Awaitable[tuple[CallRow, bool]]]


async def create_and_dial(
    services: Services,
    medium: Medium | None,
    agent_id: str | None,
    create: CreateCall,
    creation: Creation | None = None,
) -> tuple[CallRow, bool]:
    """Create the call and, when it was created and its medium is outgoing, dial it.

    Returns (the call, created); False when an idempotency key found an earlier call (not dialled again).
    Refused (503) while draining or without the cluster's Redis; a dial the provider refused ends the call
    and raises its error.
    """
    refuse_if_not_taking_calls(services)
    creation = creation or Creation()
    sip_plan = _sip_plan(services, medium)
    plan = None if sip_plan else await services.legs.plan_dial(medium, agent_id)
    if plan is not None:
        creation = dataclasses.replace(
            creation,
            dial_stream_options=plan.control.provider.stream_options(plan.control.config),
            dial_stream_signed=plan.control.provider.signs_streams,
        )
    row, created = await create(creation)
    if created and plan is not None:
        row = await services.legs.dial(row, plan)
    elif created and sip_plan is not None and services.sip is not None:
        row = await services.sip.dialer.dial(row, sip_plan)
    return row, created


def refuse_if_not_taking_calls(services: Services) -> None:
    """503 with Retry-After while the service drains, or while the cluster's Redis cannot be reached."""
    if not services.cluster.available:
        raise cluster_unavailable()
    if services.draining:
        raise Unavailable(
            "draining",
            "callbridge is shutting down and takes no new calls; try again shortly",
            retry_after_s=DRAIN_RETRY_AFTER_S,
        )


def _sip_plan(services: Services, medium: Medium | None) -> SipDialPlan | None:
    """The SIP dial a `sip` medium asks for (None for other media); 400 when SIP is off or it is unusable."""
    if medium is None or medium.kind != "sip":
        return None
    if services.sip is None:
        raise InvalidInput(
            "sip_disabled", "SIP is not enabled on this server: set CALLBRIDGE_SIP_LISTEN (or serve --sip)"
        )
    return services.sip.dialer.plan(medium)
