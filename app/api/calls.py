"""`/api/calls`: create, list, get, the call's event log, and its SIP messages."""

from __future__ import annotations

from collections.abc import Awaitable

import orjson
from pydantic import RootModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.api.call_start import CALL_CREATION_ERRORS, IDEMPOTENCY, start_call
from app.api.errors import error_body, parse_body, validated
from app.api.paging import page_params, page_response
from app.api.route_doc import DocRoute, Param, RouteDoc
from app.cluster.base import ControlReply
from app.errors import CallNotActive, InvalidInput, NotFound, ProviderFailed, ServiceError
from app.media.dtmf import DtmfTiming
from app.schemas.calls import Call, CallEvent, EndReason, EventSeverity, SipLogEntry, StartCallRequest
from app.schemas.data_messages import (
    ColdTransferMessage,
    DataMessage,
    ForcedAgentMessage,
    HangUpMessage,
    PlayDtmfMessage,
    UserTextMessage,
)
from app.services import Services, services_of
from app.store.tables import CallEventRow, CallRow, SipMessageRow


async def create_call(request: Request) -> Response:
    services = services_of(request)
    body = await parse_body(request, StartCallRequest)
    return await start_call(
        request, services, body.medium, None, lambda creation: services.calls.create_call(body, creation)
    )


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


def event_view(row: CallEventRow) -> dict:
    """An event as the API shows it."""
    return CallEvent(
        call_id=row.call_id,
        call_timestamp=row.call_offset,
        wall_clock_timestamp=row.wall_clock,
        severity=EventSeverity(row.severity),
        type=row.type,
        text=row.text,
        extras=row.extras,
    ).model_dump(mode="json", by_alias=True)


def severities_param(request: Request) -> list[str]:
    """The severities at or above the request's `minimumSeverity` (default info); 400 for an unknown one."""
    raw = (
        request.query_params.get("minimum_severity") or request.query_params.get("minimumSeverity") or "info"
    )
    try:
        minimum = EventSeverity(raw)
    except ValueError:
        raise InvalidInput(
            "invalid_severity", "minimum_severity must be debug, info, warning or error"
        ) from None
    return [s.value for s in EventSeverity if s.rank >= minimum.rank]


async def list_call_events(request: Request) -> Response:
    services = services_of(request)
    call_id = request.path_params["call_id"]
    if await services.calls_repo.get(call_id) is None:
        raise NotFound("call_not_found", f"no call with id {call_id}")
    severities = severities_param(request)
    cursor, size = page_params(request)
    await services.events.flush()  # include what the live session recorded a moment ago
    page = await services.event_repo.page(call_id, severities, cursor, size)
    return page_response(request, page, event_view)


def _sip_log_view(row: SipMessageRow) -> dict:
    return SipLogEntry(
        timestamp=row.wall_clock,
        direction="in" if row.direction == "in" else "out",
        peer=row.peer,
        message=row.text,
    ).model_dump(mode="json", by_alias=True)


async def list_sip_logs(request: Request) -> Response:
    """The call's SIP messages in the order they were sent and received (none for a call not over SIP)."""
    services = services_of(request)
    call_id = request.path_params["call_id"]
    if await services.calls_repo.get(call_id) is None:
        raise NotFound("call_not_found", f"no call with id {call_id}")
    cursor, size = page_params(request)
    await services.events.flush()  # the SIP messages are written behind with the events
    page = await services.sip_messages.page(call_id, cursor, size)
    return page_response(request, page, _sip_log_view)


async def send_data_message(request: Request) -> Response:
    """Act on a live call: hang up, transfer, DTMF, or text for the agent. 204; 422 when not live.

    A call whose session another instance holds is acted on there (its answer is this one's)."""
    services = services_of(request)
    call_id = request.path_params["call_id"]
    row = await services.calls_repo.get(call_id)
    if row is None:
        raise NotFound("call_not_found", f"no call with id {call_id}")
    body = await parse_body(request, DataMessageRequest)
    if row.ended is not None:
        raise CallNotActive("call_not_active", f"call {call_id} has ended")
    if services.sessions.get(call_id) is None:
        forwarded = orjson.dumps(body.model_dump(mode="json", by_alias=True, exclude_unset=True))
        reply = await services.cluster.forward(call_id, forwarded)
        if reply is not None:
            media_type = "application/json" if reply.body else None
            return Response(reply.body, reply.status, headers=reply.headers, media_type=media_type)
    await act_on_call(services, row, body.root)
    return Response(status_code=204)


async def control_call(services: Services, call_id: str, body: bytes) -> ControlReply:
    """A data message another instance forwarded for a call held here: acted on as if it came here."""
    try:
        row = await services.calls_repo.get(call_id)
        if row is None:
            raise NotFound("call_not_found", f"no call with id {call_id}")
        message = validated(DataMessageRequest, orjson.loads(body)).root
        if row.ended is not None:
            raise CallNotActive("call_not_active", f"call {call_id} has ended")
        await act_on_call(services, row, message)
    except ServiceError as exc:
        return ControlReply(exc.status, orjson.dumps(error_body(exc.code, exc.detail)), exc.headers)
    return ControlReply(204)


async def act_on_call(services: Services, row: CallRow, message: DataMessage) -> None:
    """Carry out a data message on a call that has not ended, on this instance; raises what refuses it."""
    call_id = row.id
    session = services.sessions.get(call_id)
    actions = session.actions if session is not None and session.joined else None
    if isinstance(message, HangUpMessage):
        text = message.message or "hung up through the API"
        if session is not None and row.joined is not None:  # joined here, or joining: its session stops
            if actions is None:  # still joining: end the call now, so the leg is hung up at once
                await services.calls.end(row, EndReason.AGENT_HANGUP, text)
            session.hang_up(text)
        elif row.joined is None:  # still ringing, or waiting for its stream
            text = f"{text} before the call was joined"
            await services.calls.end(row, EndReason.UNJOINED, text)
            if session is not None:  # stop waiting for a stream that no longer has a call
                session.finish(EndReason.UNJOINED, text)
        else:  # live elsewhere: ending it hangs up the provider leg, which closes that stream
            await services.calls.end(row, EndReason.AGENT_HANGUP, text)
        return
    if actions is None:
        raise CallNotActive("call_not_active", f"call {call_id} is not joined (yet): nothing to act on")
    if isinstance(message, ColdTransferMessage):
        problem = await actions.transfer(
            message.target,
            sip_verb=message.sip_verb,
            extra_headers=message.extra_headers,
            fallback_to_bridge=message.fallback_to_bridge,
        )
        if problem is not None:
            raise ProviderFailed("transfer_failed", problem)
    elif isinstance(message, PlayDtmfMessage):
        timing = DtmfTiming(round(message.tone_duration * 1000), round(message.space_duration * 1000))
        await actions.play_dtmf(message.digits, timing)
    elif isinstance(message, UserTextMessage):
        await _agent_took(actions.send_user_text(message.text))
    elif isinstance(message, ForcedAgentMessage):
        await _agent_took(actions.speak(message.content))


async def _agent_took(delivered: Awaitable[bool]) -> None:
    if not await delivered:
        raise InvalidInput("unsupported_message", "this call's agent pipeline cannot take text messages")


class DataMessageRequest(RootModel[DataMessage]):
    pass


_NO_CALL = (404, "call_not_found")
#: `minimumSeverity` of the event lists (calls' and batches').
SEVERITY = Param(
    "minimumSeverity",
    "The least severe events listed (default info).",
    schema={"type": "string", "enum": [s.value for s in EventSeverity]},
)
SEVERITY_ERROR = (400, "invalid_severity")
ROUTES = [
    DocRoute(
        "/calls",
        list_calls,
        methods=["GET"],
        doc=RouteDoc(
            "List calls",
            "calls",
            response=Call,
            paged=True,
            params=(Param("agentId", "Only the calls of this agent."),),
        ),
    ),
    DocRoute(
        "/calls",
        create_call,
        methods=["POST"],
        doc=RouteDoc(
            "Create a call without an agent",
            "calls",
            "A call with an `outgoing` medium is dialled; the others wait on their `joinUrl`.",
            body=StartCallRequest,
            example={
                "systemPrompt": "You are a friendly assistant.",
                "medium": {"serverWebSocket": {"inputSampleRate": 16000, "outputSampleRate": 16000}},
                "maxDuration": "300s",
                "metadata": {"customer": "42"},
            },
            response=Call,
            status=201,
            params=(IDEMPOTENCY,),
            errors=CALL_CREATION_ERRORS,
        ),
    ),
    DocRoute(
        "/calls/{call_id}",
        get_call,
        methods=["GET"],
        doc=RouteDoc("Get a call", "calls", response=Call, errors=(_NO_CALL,)),
    ),
    DocRoute(
        "/calls/{call_id}/events",
        list_call_events,
        methods=["GET"],
        doc=RouteDoc(
            "List a call's events",
            "calls",
            response=CallEvent,
            paged=True,
            params=(SEVERITY,),
            errors=(_NO_CALL, SEVERITY_ERROR),
        ),
    ),
    DocRoute(
        "/calls/{call_id}/sip_logs",
        list_sip_logs,
        methods=["GET"],
        doc=RouteDoc(
            "List a call's SIP messages", "calls", response=SipLogEntry, paged=True, errors=(_NO_CALL,)
        ),
    ),
    DocRoute(
        "/calls/{call_id}/send_data_message",
        send_data_message,
        methods=["POST"],
        doc=RouteDoc(
            "Act on a live call",
            "calls",
            "Hang up, transfer, play DTMF, or give the agent text. A call another instance holds is acted on "
            "there.",
            body=DataMessageRequest,
            example={"type": "hang_up", "message": "the caller asked to end the call"},
            status=204,
            errors=(
                _NO_CALL,
                (400, "unsupported_message"),
                (422, "call_not_active"),
                (502, "transfer_failed"),
                (503, "cluster_unavailable"),
                (504, "control_timeout"),
            ),
        ),
    ),
]
