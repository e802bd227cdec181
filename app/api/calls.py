"""`/api/calls`: create, list, get, and the call's event log."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.api.errors import parse_body
from app.api.paging import page_params, page_response
from app.errors import InvalidInput, NotFound
from app.schemas.calls import CallEvent, EventSeverity, StartCallRequest
from app.services import services_of
from app.store.tables import CallEventRow


async def create_call(request: Request) -> Response:
    services = services_of(request)
    body = await parse_body(request, StartCallRequest)
    call = await services.calls.create_call(body)
    return JSONResponse(services.calls.to_schema(call).to_json(), status_code=201)


async def list_calls(request: Request) -> Response:
    services = services_of(request)
    cursor, size = page_params(request)
    agent_id = request.query_params.get("agentId") or None
    page = await services.calls_repo.page(agent_id, cursor, size)
    return page_response(request, page, lambda row: services.calls.to_schema(row).to_json())


async def get_call(request: Request) -> Response:
    services = services_of(request)
    row = await services.calls_repo.get(request.path_params["call_id"])
    if row is None:
        raise NotFound("call_not_found", f"no call with id {request.path_params['call_id']}")
    return JSONResponse(services.calls.to_schema(row).to_json())


def _event_view(row: CallEventRow) -> dict:
    return CallEvent(
        call_id=row.call_id,
        call_timestamp=row.call_offset,
        wall_clock_timestamp=row.wall_clock,
        severity=EventSeverity(row.severity),
        type=row.type,
        text=row.text,
        extras=row.extras,
    ).model_dump(mode="json", by_alias=True)


async def list_call_events(request: Request) -> Response:
    services = services_of(request)
    call_id = request.path_params["call_id"]
    if await services.calls_repo.get(call_id) is None:
        raise NotFound("call_not_found", f"no call with id {call_id}")
    raw = (
        request.query_params.get("minimum_severity") or request.query_params.get("minimumSeverity") or "info"
    )
    try:
        minimum = EventSeverity(raw)
    except ValueError:
        raise InvalidInput(
            "invalid_severity", "minimum_severity must be debug, info, warning or error"
        ) from None
    severities = [s.value for s in EventSeverity if s.rank >= minimum.rank]
    cursor, size = page_params(request)
    await services.events.flush()  # include what the live session recorded a moment ago
    page = await services.event_repo.page(call_id, severities, cursor, size)
    return page_response(request, page, _event_view)


ROUTES = [
    Route("/calls", list_calls, methods=["GET"]),
    Route("/calls", create_call, methods=["POST"]),
    Route("/calls/{call_id}", get_call, methods=["GET"]),
    Route("/calls/{call_id}/events", list_call_events, methods=["GET"]),
]
