"""`/api/agents/{agentId}/scheduled_batches`: batches of outbound calls an agent makes (Ultravox-shaped).

The scheduler (app/scheduler) dials them; this module only stores, shows and changes them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing, closing
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.api.agents import load_agent
from app.api.batch_body import SpecSpool, spool_body
from app.api.calls import SEVERITY, SEVERITY_ERROR, severities_param
from app.api.errors import json_object, validated
from app.api.paging import page_params, page_response
from app.api.route_doc import DocRoute, Param, RouteDoc
from app.errors import InvalidInput, NotFound
from app.scheduler.calling_hours import TimezoneRequired, calling_hours_and_zone
from app.schemas.agents import CallTemplate
from app.schemas.batches import (
    BATCH_ERROR_CODES,
    BatchEvent,
    ScheduledBatch,
    ScheduledBatchCreate,
    ScheduledBatchUpdate,
    ScheduledCall,
    ScheduledCallSpec,
    ScheduledCallStatus,
    check_window,
    is_dialled,
    shortest_window,
)
from app.schemas.calls import Call, EventSeverity
from app.schemas.media import Medium
from app.services import Services, services_of
from app.store.tables import BatchEventRow, ScheduledBatchRow, ScheduledCallRow, utcnow

M = TypeVar("M", bound=BaseModel)

#: Where batches are created, inside the `/api` mount: its bodies may be as large as BATCH_MAX_BODY_BYTES.
BATCHES_PATH = "/agents/{agent_id}/scheduled_batches"
#: Request bodies up to 32 MiB on batch creation (100,000 calls), as Ultravox accepts.
BATCH_MAX_BODY_BYTES = 32 * 2**20
#: How long such a body may take to arrive (32 MiB at 1 MB/s).
BATCH_BODY_READ_TIMEOUT_S = 60.0


def _validated(model: type[M], data: Any, where: str = "") -> M:
    """`data` as `model`; 400 with the batch's own code (`no_calls`, `invalid_window`...) where one fits."""
    return validated(model, data, where, BATCH_ERROR_CODES)


def _batch_view(row: ScheduledBatchRow, live: int) -> dict[str, Any]:
    """The batch as responses show it, with `live` of its calls live now."""
    return ScheduledBatch(
        batch_id=row.id,
        agent_id=row.agent_id,
        created=row.created,
        window_start=row.window_start,
        window_end=row.window_end,
        paused=row.paused,
        max_concurrency=row.max_concurrency,
        calls_per_minute=row.calls_per_minute,
        retry=row.retry,
        webhook_url=row.webhook_url,
        timezone=row.timezone,
        calling_hours=row.calling_hours,
        total_count=row.total_count,
        completed_count=row.completed_count,
        live_count=live,
        ended_at=row.ended_at,
    ).to_json()


def _call_view(row: ScheduledCallRow) -> dict[str, Any]:
    return ScheduledCall(
        medium=row.spec.get("medium"),
        template_context=row.spec.get("templateContext", {}),
        metadata=row.spec.get("metadata", {}),
        timezone=row.spec.get("timezone"),
        calling_hours=row.spec.get("callingHours"),
        status=ScheduledCallStatus(row.status),
        batch_id=row.batch_id,
        call_id=row.call_id,
        error=row.error,
        attempts=row.attempts,
    ).to_json()


async def _call_specs(
    body: ScheduledBatchCreate,
    calls: AsyncIterator[tuple[int, dict[str, Any]]],
    template_medium: Medium | None,
    specs: SpecSpool,
) -> None:
    """Each call validated and spooled as stored; 400 for a call only the webhook could connect and none
    given, or a webhook given where every call is dialled (Ultravox refuses it too)."""
    all_dialled = True
    async for index, raw in calls:
        spec = _validated(ScheduledCallSpec, raw, f"calls.{index}: ")
        _check_hours_have_a_timezone(spec, body, index)
        if not is_dialled(spec.medium or template_medium):
            all_dialled = False
            if body.webhook_url is None:
                raise InvalidInput(
                    "webhook_url_required",
                    f"calls.{index}: its medium has no outgoing (twilio, telnyx, plivo or sip), so "
                    "callbridge cannot dial it: give the batch a webhookUrl that connects such calls",
                )
        specs.append(spec.to_json())
    if all_dialled and body.webhook_url is not None:
        raise InvalidInput(
            "webhook_url_not_allowed",
            "webhookUrl is only for batches with calls that have no outgoing medium; "
            "every call here is dialled",
        )


def _check_hours_have_a_timezone(spec: ScheduledCallSpec, body: ScheduledBatchCreate, index: int) -> None:
    """400 `timezone_required` for a call with calling hours and no timezone (its own or the batch's)."""
    try:
        calling_hours_and_zone(spec.calling_hours, spec.timezone, body.calling_hours, body.timezone)
    except TimezoneRequired:
        raise InvalidInput(
            "timezone_required",
            f"calls.{index}: callingHours need a timezone (an IANA name such as America/New_York): "
            "give the call or the batch a timezone",
        ) from None


def _check_window_fits(services: Services, body: ScheduledBatchCreate, calls: int, now: datetime) -> None:
    """400 `window_too_short` when the calls cannot all be dialled in the window at the batch's pace."""
    if body.window_end is None:
        return
    pace = body.calls_per_minute or services.settings.batch_calls_per_minute
    start = max(body.window_start or now, now)
    window = body.window_end - start
    needed = shortest_window(calls, pace)
    if window < needed:
        have = max(window.total_seconds(), 0) / 60
        raise InvalidInput(
            "window_too_short",
            f"the window of {have:.1f} minutes is too short: {calls} calls need at least "
            f"{needed.total_seconds() / 60:.0f} minutes at {pace:g} calls per minute",
        )


async def _load_batch(services: Services, request: Request) -> ScheduledBatchRow:
    agent_id, batch_id = request.path_params["agent_id"], request.path_params["batch_id"]
    row = await services.batches.get(agent_id, batch_id)
    if row is None:
        raise NotFound("batch_not_found", f"agent {agent_id} has no scheduled batch {batch_id}")
    return row


async def _batch_response(services: Services, row: ScheduledBatchRow) -> JSONResponse:
    """The batch as JSON, its `liveCount` counted now."""
    return JSONResponse(_batch_view(row, await services.batches.live_calls(row.id)))


async def _checked_body(
    request: Request, services: Services, template_medium: Medium | None
) -> tuple[ScheduledBatchCreate, SpecSpool, datetime]:
    """The creation body spooled, then checked in full (the batch's fields, each call, the window): the
    batch, its calls as stored, and the time they were found valid. 400 at the first problem.

    The body has fully arrived before anything is checked (so no write transaction waits on an upload),
    and only a piece of it (what ijson parses at once) is in memory as Python objects (see `batch_body`).
    """
    spooled = await spool_body(request)
    specs = SpecSpool()
    try:
        scan = await spooled.scan()
        body = _validated(ScheduledBatchCreate, scan.create_input())
        async with aclosing(spooled.calls(scan)) as calls:
            await _call_specs(body, calls, template_medium, specs)
        now = utcnow()
        _check_window_fits(services, body, len(specs), now)
    except BaseException:
        specs.close()
        raise
    finally:
        spooled.close()
    return body, specs, now


async def create_batch(request: Request) -> Response:
    """201 with the batch, stored in one transaction once all of it has been checked."""
    services = services_of(request)
    agent = await load_agent(services, request.path_params["agent_id"])
    template_medium = CallTemplate.model_validate(agent.call_template).medium
    body, specs, now = await _checked_body(request, services, template_medium)
    row = ScheduledBatchRow(
        id=str(uuid.uuid4()),
        agent_id=agent.id,
        created=now,
        window_start=body.window_start,
        window_end=body.window_end,
        paused=body.paused,
        deleted=False,
        max_concurrency=body.max_concurrency,
        calls_per_minute=body.calls_per_minute,
        retry=body.retry.to_json() if body.retry else None,
        webhook_url=body.webhook_url,
        webhook_secret=body.webhook_secret,
        timezone=body.timezone,
        calling_hours=body.calling_hours.to_json() if body.calling_hours else None,
    )
    with closing(specs):
        row = await services.batches.create(row, specs)
    services.events.record_batch(
        row.id,
        "batch_created",
        f"batch created with {row.total_count} calls",
        extras={"totalCount": row.total_count},
    )
    return JSONResponse(_batch_view(row, live=0), status_code=201)


async def list_batches(request: Request) -> Response:
    services = services_of(request)
    agent = await load_agent(services, request.path_params["agent_id"])
    cursor, size = page_params(request)
    page = await services.batches.page(agent.id, cursor, size)
    live = await services.batches.live_calls_of([row.id for row in page.rows])
    return page_response(request, page, lambda row: _batch_view(row, live.get(row.id, 0)))


async def get_batch(request: Request) -> Response:
    services = services_of(request)
    return await _batch_response(services, await _load_batch(services, request))


async def update_batch(request: Request) -> Response:
    """PATCH `paused` (resuming is allowed, unlike Ultravox), the window, maxConcurrency, callsPerMinute."""
    services = services_of(request)
    row = await _load_batch(services, request)
    patch = _validated(ScheduledBatchUpdate, await json_object(request))
    changes = patch.changes()
    start, end = changes.get("window_start", row.window_start), changes.get("window_end", row.window_end)
    try:
        check_window(start, end)
    except ValueError as exc:  # PydanticCustomError
        raise InvalidInput("invalid_window", str(exc)) from None
    if changes:
        await services.batches.update(row.id, **changes)
        _record_update(services, row, changes)
    return await _batch_response(services, await _load_batch(services, request))


def _record_update(services: Services, row: ScheduledBatchRow, changes: dict[str, Any]) -> None:
    """The batch events of a PATCH: paused or resumed, and what else it changed."""
    paused = changes.pop("paused", row.paused)
    if paused != row.paused:
        kind, text = ("batch_paused", "batch paused") if paused else ("batch_resumed", "batch resumed")
        services.events.record_batch(row.id, kind, text)
    if changes:
        shown = ScheduledBatchUpdate.model_validate(changes).model_dump(
            mode="json", by_alias=True, include=set(changes)
        )
        services.events.record_batch(
            row.id, "batch_updated", "changed " + ", ".join(sorted(shown)), extras=shown
        )


async def delete_batch(request: Request) -> Response:
    """204: the batch stops (no new dials; live calls go on) and is gone from the API; its Calls stay."""
    services = services_of(request)
    row = await _load_batch(services, request)
    await services.batches.delete(row.id)
    services.events.record_batch(row.id, "batch_deleted", "batch deleted: nothing more is dialled")
    return Response(status_code=204)


async def list_scheduled_calls(request: Request) -> Response:
    services = services_of(request)
    row = await _load_batch(services, request)
    raw = request.query_params.get("status") or None
    try:
        status = ScheduledCallStatus(raw) if raw else None
    except ValueError:
        names = ", ".join(s.value for s in ScheduledCallStatus)
        raise InvalidInput("invalid_status", f"status must be one of {names}") from None
    cursor, size = page_params(request)
    page = await services.batches.calls_page(row.id, status, cursor, size)
    return page_response(request, page, _call_view)


async def list_created_calls(request: Request) -> Response:
    services = services_of(request)
    row = await _load_batch(services, request)
    cursor, size = page_params(request)
    page = await services.batches.created_calls_page(row.id, cursor, size)
    return page_response(request, page, lambda call: services.calls.to_schema(call).to_json())


async def list_batch_events(request: Request) -> Response:
    """The batch's events in order: its own (created, paused, ended...) and its calls' (dialled...)."""
    services = services_of(request)
    row = await _load_batch(services, request)
    severities = severities_param(request)
    cursor, size = page_params(request)
    await services.events.flush()  # include what the scheduler recorded a moment ago
    page = await services.event_repo.batch_page(row.id, severities, cursor, size)
    return page_response(request, page, _event_view)


def _event_view(row: BatchEventRow) -> dict[str, Any]:
    return BatchEvent(
        batch_id=row.batch_id,
        scheduled_call_id=row.scheduled_call_id,
        call_id=row.call_id,
        wall_clock_timestamp=row.wall_clock,
        severity=EventSeverity(row.severity),
        type=row.type,
        text=row.text,
        extras=row.extras,
    ).to_json()


_NO_AGENT = (404, "agent_not_found")
_NO_BATCH = (404, "batch_not_found")
_ONE = BATCHES_PATH + "/{batch_id}"
CREATE_BATCH_EXAMPLE = {
    "windowStart": "2030-01-01T09:00:00Z",
    "windowEnd": "2030-01-01T17:00:00Z",
    "timezone": "America/New_York",
    "callingHours": {"start": "09:00", "end": "20:00"},
    "calls": [
        {
            "medium": {"twilio": {"outgoing": {"to": "+14155550100", "from": "+14155550199"}}},
            "templateContext": {"name": "Ada"},
            "metadata": {"row": "1"},
        }
    ],
}
ROUTES = [
    DocRoute(
        BATCHES_PATH,
        list_batches,
        methods=["GET"],
        doc=RouteDoc(
            "List the agent's scheduled batches",
            "batches",
            response=ScheduledBatch,
            paged=True,
            errors=(_NO_AGENT,),
        ),
    ),
    DocRoute(
        BATCHES_PATH,
        create_batch,
        methods=["POST"],
        doc=RouteDoc(
            "Create a scheduled batch",
            "batches",
            f"Bodies up to {BATCH_MAX_BODY_BYTES // 2**20} MiB; each call is checked on its own.",
            body=ScheduledBatchCreate,
            example=CREATE_BATCH_EXAMPLE,
            response=ScheduledBatch,
            status=201,
            errors=(
                _NO_AGENT,
                *((400, code) for code in sorted(BATCH_ERROR_CODES)),
                (400, "webhook_url_required"),
                (400, "webhook_url_not_allowed"),
                (400, "timezone_required"),
                (400, "window_too_short"),
            ),
        ),
    ),
    DocRoute(
        _ONE,
        get_batch,
        methods=["GET"],
        doc=RouteDoc("Get a scheduled batch", "batches", response=ScheduledBatch, errors=(_NO_BATCH,)),
    ),
    DocRoute(
        _ONE,
        update_batch,
        methods=["PATCH"],
        doc=RouteDoc(
            "Pause, resume or reschedule a batch",
            "batches",
            body=ScheduledBatchUpdate,
            example={"paused": True},
            response=ScheduledBatch,
            errors=(_NO_BATCH, (400, "invalid_window")),
        ),
    ),
    DocRoute(
        _ONE,
        delete_batch,
        methods=["DELETE"],
        doc=RouteDoc("Delete a scheduled batch", "batches", status=204, errors=(_NO_BATCH,)),
    ),
    DocRoute(
        _ONE + "/scheduled_calls",
        list_scheduled_calls,
        methods=["GET"],
        doc=RouteDoc(
            "List a batch's scheduled calls",
            "batches",
            response=ScheduledCall,
            paged=True,
            params=(
                Param(
                    "status",
                    "Only the calls in this status.",
                    schema={"type": "string", "enum": [s.value for s in ScheduledCallStatus]},
                ),
            ),
            errors=(_NO_BATCH, (400, "invalid_status")),
        ),
    ),
    DocRoute(
        _ONE + "/created_calls",
        list_created_calls,
        methods=["GET"],
        doc=RouteDoc(
            "List the calls a batch created", "batches", response=Call, paged=True, errors=(_NO_BATCH,)
        ),
    ),
    DocRoute(
        _ONE + "/events",
        list_batch_events,
        methods=["GET"],
        doc=RouteDoc(
            "List a batch's events",
            "batches",
            response=BatchEvent,
            paged=True,
            params=(SEVERITY,),
            errors=(_NO_BATCH, SEVERITY_ERROR),
        ),
    ),
]
