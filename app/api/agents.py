"""`/api/agents`: CRUD, and calls created from an agent's template."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.api.call_start import CALL_CREATION_ERRORS, IDEMPOTENCY, start_call
from app.api.errors import describe_validation_error, parse_body
from app.api.paging import page_params, page_response
from app.api.route_doc import DocRoute, RouteDoc
from app.errors import InvalidInput, NotFound
from app.pipeline.secret_options import public_pipeline_spec
from app.schemas.agents import Agent, AgentCreate, AgentStatistics, AgentUpdate, CallTemplate, CallTemplateOut
from app.schemas.calls import Call, StartAgentCallRequest
from app.schemas.webhooks import public_callbacks
from app.services import Services, services_of
from app.store.tables import AgentRow, utcnow


def agent_view(row: AgentRow, calls: int) -> dict[str, Any]:
    template = CallTemplateOut.model_validate(
        {**row.call_template, "created": row.created, "updated": row.updated}
    )
    view = Agent(
        agent_id=row.id,
        name=row.name,
        created=row.created,
        call_template=template,
        statistics=AgentStatistics(calls=calls),
    ).to_json()
    view["callTemplate"]["pipeline"] = public_pipeline_spec(view["callTemplate"]["pipeline"])
    if "callbacks" in view["callTemplate"]:
        view["callTemplate"]["callbacks"] = public_callbacks(view["callTemplate"]["callbacks"])
    return view


async def load_agent(services: Services, agent_id: str) -> AgentRow:
    row = await services.agents.get(agent_id)
    if row is None:
        raise NotFound("agent_not_found", f"no agent with id {agent_id}")
    return row


async def create_agent(request: Request) -> Response:
    services = services_of(request)
    body = await parse_body(request, AgentCreate)
    now = utcnow()
    row = AgentRow(
        id=str(uuid.uuid4()),
        name=body.name,
        call_template=body.call_template.to_json(),
        created=now,
        updated=now,
    )
    await services.agents.add(row)
    return JSONResponse(agent_view(row, 0), status_code=201)


async def list_agents(request: Request) -> Response:
    services = services_of(request)
    cursor, size = page_params(request)
    page = await services.agents.page(cursor, size)
    counts = await services.agents.call_counts([row.id for row in page.rows])
    return page_response(request, page, lambda row: agent_view(row, counts.get(row.id, 0)))


async def get_agent(request: Request) -> Response:
    services = services_of(request)
    row = await load_agent(services, request.path_params["agent_id"])
    counts = await services.agents.call_counts([row.id])
    return JSONResponse(agent_view(row, counts.get(row.id, 0)))


async def update_agent(request: Request) -> Response:
    services = services_of(request)
    row = await load_agent(services, request.path_params["agent_id"])
    body = await parse_body(request, AgentUpdate)
    values: dict[str, Any] = {"updated": utcnow()}
    if body.name is not None:
        values["name"] = body.name
    if body.call_template is not None:
        merged = {**row.call_template, **body.call_template}
        try:
            values["call_template"] = CallTemplate.model_validate(merged).to_json()
        except ValidationError as exc:
            raise InvalidInput("invalid_request", "callTemplate: " + describe_validation_error(exc)) from None
    updated = await services.agents.update(row.id, **values)
    if updated is None:
        raise NotFound("agent_not_found", f"no agent with id {row.id}")
    counts = await services.agents.call_counts([row.id])
    return JSONResponse(agent_view(updated, counts.get(row.id, 0)))


async def delete_agent(request: Request) -> Response:
    services = services_of(request)
    if not await services.agents.delete(request.path_params["agent_id"]):
        raise NotFound("agent_not_found", f"no agent with id {request.path_params['agent_id']}")
    return Response(status_code=204)


async def create_agent_call(request: Request) -> Response:
    services = services_of(request)
    agent = await load_agent(services, request.path_params["agent_id"])
    body = await parse_body(request, StartAgentCallRequest)
    template_medium = CallTemplate.model_validate(agent.call_template).medium
    return await start_call(
        request,
        services,
        body.medium or template_medium,
        agent.id,
        lambda creation: services.calls.create_agent_call(agent, body, creation),
    )


async def list_agent_calls(request: Request) -> Response:
    services = services_of(request)
    agent = await load_agent(services, request.path_params["agent_id"])
    cursor, size = page_params(request)
    page = await services.calls_repo.page(agent.id, cursor, size)
    return page_response(request, page, lambda row: services.calls.to_schema(row).to_json())


_NO_AGENT = (404, "agent_not_found")
CREATE_AGENT_EXAMPLE = {
    "name": "support",
    "callTemplate": {
        "systemPrompt": "You are the support line of {{company}}.",
        "joinTimeout": "30s",
        "maxDuration": "600s",
        "firstSpeakerSettings": {"agent": {"text": "Hello, how can I help?"}},
    },
}
ROUTES = [
    DocRoute(
        "/agents",
        list_agents,
        methods=["GET"],
        doc=RouteDoc("List agents", "agents", response=Agent, paged=True),
    ),
    DocRoute(
        "/agents",
        create_agent,
        methods=["POST"],
        doc=RouteDoc(
            "Create an agent",
            "agents",
            body=AgentCreate,
            example=CREATE_AGENT_EXAMPLE,
            response=Agent,
            status=201,
        ),
    ),
    DocRoute(
        "/agents/{agent_id}",
        get_agent,
        methods=["GET"],
        doc=RouteDoc("Get an agent", "agents", response=Agent, errors=(_NO_AGENT,)),
    ),
    DocRoute(
        "/agents/{agent_id}",
        update_agent,
        methods=["PATCH"],
        doc=RouteDoc(
            "Change an agent",
            "agents",
            "Each `callTemplate` field given replaces the stored one; the result is validated as a whole.",
            body=AgentUpdate,
            example={"callTemplate": {"systemPrompt": "You are brief."}},
            response=Agent,
            errors=(_NO_AGENT,),
        ),
    ),
    DocRoute(
        "/agents/{agent_id}",
        delete_agent,
        methods=["DELETE"],
        doc=RouteDoc("Delete an agent", "agents", status=204, errors=(_NO_AGENT,)),
    ),
    DocRoute(
        "/agents/{agent_id}/calls",
        create_agent_call,
        methods=["POST"],
        doc=RouteDoc(
            "Create a call from the agent's template",
            "agents",
            "A call with an `outgoing` medium is dialled; the others wait on their `joinUrl`.",
            body=StartAgentCallRequest,
            example={
                "templateContext": {"company": "Example Inc."},
                "metadata": {"ticket": "T-1"},
                "medium": {"serverWebSocket": {"inputSampleRate": 16000}},
            },
            response=Call,
            status=201,
            params=(IDEMPOTENCY,),
            errors=(_NO_AGENT, *CALL_CREATION_ERRORS),
        ),
    ),
    DocRoute(
        "/agents/{agent_id}/calls",
        list_agent_calls,
        methods=["GET"],
        doc=RouteDoc("List the agent's calls", "agents", response=Call, paged=True, errors=(_NO_AGENT,)),
    ),
]
