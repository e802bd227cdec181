"""`/api/webhooks`: account webhooks (CRUD). Their secrets are stored sealed and returned by GET."""

from __future__ import annotations

import secrets as random_secrets
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.api.errors import json_object, validated
from app.api.paging import page_params, page_response
from app.api.route_doc import DocRoute, RouteDoc
from app.errors import InvalidInput, NotFound
from app.schemas.webhooks import WEBHOOK_ERROR_CODES, Webhook, WebhookFields, WebhookStatus
from app.services import Services, services_of
from app.store.tables import WebhookRow, utcnow
from app.store.webhooks import WebhookRepository


def _repository(services: Services) -> WebhookRepository:
    assert services.webhooks is not None, "webhooks start with the service"
    return services.webhooks.repository


def webhook_view(repository: WebhookRepository, row: WebhookRow) -> dict[str, Any]:
    return Webhook(
        webhook_id=row.id,
        created=row.created,
        url=row.url,
        events=row.events,
        agent_id=row.agent_id,
        secrets=repository.secrets_of(row),
        status=WebhookStatus(row.status),
        last_status_change=row.last_status_change,
        recent_failures=row.recent_failures,
    ).to_json()


async def _fields(services: Services, data: dict[str, Any]) -> WebhookFields:
    """The body as webhook fields; 400 for a bad field, or an agentId no agent has."""
    fields = validated(WebhookFields, data, codes=WEBHOOK_ERROR_CODES)
    if fields.agent_id is not None and await services.agents.get(fields.agent_id) is None:
        raise InvalidInput("agent_not_found", f"agentId: no agent with id {fields.agent_id}")
    if not fields.secrets:
        fields.secrets = [random_secrets.token_urlsafe(32)]
    return fields


def _values(fields: WebhookFields) -> dict[str, Any]:
    return {
        "url": fields.url,
        "events": [event.value for event in fields.events],
        "agent_id": fields.agent_id,
        "secrets": list(fields.secrets),
    }


async def _load(repository: WebhookRepository, webhook_id: str) -> WebhookRow:
    row = await repository.get(webhook_id)
    if row is None:
        raise NotFound("webhook_not_found", f"no webhook with id {webhook_id}")
    return row


async def list_webhooks(request: Request) -> Response:
    repository = _repository(services_of(request))
    cursor, size = page_params(request)
    page = await repository.page(cursor, size)
    return page_response(request, page, lambda row: webhook_view(repository, row))


async def create_webhook(request: Request) -> Response:
    services = services_of(request)
    repository = _repository(services)
    fields = await _fields(services, await json_object(request))
    row = WebhookRow(
        id=str(uuid.uuid4()),
        created=utcnow(),
        status=WebhookStatus.NORMAL.value,
        last_status_change=None,
        recent_failures=[],
        **_values(fields),
    )
    await repository.add(row)
    return JSONResponse(webhook_view(repository, row), status_code=201)


async def get_webhook(request: Request) -> Response:
    repository = _repository(services_of(request))
    return JSONResponse(webhook_view(repository, await _load(repository, request.path_params["webhook_id"])))


async def replace_webhook(request: Request) -> Response:
    """PUT: the body is the whole webhook (secrets left out or empty get a generated one)."""
    services = services_of(request)
    repository = _repository(services)
    row = await _load(repository, request.path_params["webhook_id"])
    fields = await _fields(services, await json_object(request))
    return await _save(repository, row.id, fields)


async def update_webhook(request: Request) -> Response:
    """PATCH: only the fields given change."""
    services = services_of(request)
    repository = _repository(services)
    row = await _load(repository, request.path_params["webhook_id"])
    stored = {
        "url": row.url,
        "events": row.events,
        "agentId": row.agent_id,
        "secrets": repository.secrets_of(row),
    }
    fields = await _fields(services, {**stored, **await json_object(request)})
    return await _save(repository, row.id, fields)


async def _save(repository: WebhookRepository, webhook_id: str, fields: WebhookFields) -> Response:
    updated = await repository.update(webhook_id, **_values(fields))
    if updated is None:
        raise NotFound("webhook_not_found", f"no webhook with id {webhook_id}")
    return JSONResponse(webhook_view(repository, updated))


async def delete_webhook(request: Request) -> Response:
    webhook_id = request.path_params["webhook_id"]
    if not await _repository(services_of(request)).delete(webhook_id):
        raise NotFound("webhook_not_found", f"no webhook with id {webhook_id}")
    return Response(status_code=204)


_NOT_FOUND = (404, "webhook_not_found")
_BAD_FIELDS = (*((400, code) for code in sorted(WEBHOOK_ERROR_CODES)), (400, "agent_not_found"))
_ONE = "/webhooks/{webhook_id}"
ROUTES = [
    DocRoute(
        "/webhooks",
        list_webhooks,
        methods=["GET"],
        doc=RouteDoc("List webhooks", "webhooks", response=Webhook, paged=True),
    ),
    DocRoute(
        "/webhooks",
        create_webhook,
        methods=["POST"],
        doc=RouteDoc(
            "Create a webhook",
            "webhooks",
            "Without `secrets` one is generated.",
            body=WebhookFields,
            example={"url": "https://example.com/hooks/callbridge", "events": ["call.started", "call.ended"]},
            response=Webhook,
            status=201,
            errors=_BAD_FIELDS,
        ),
    ),
    DocRoute(
        _ONE,
        get_webhook,
        methods=["GET"],
        doc=RouteDoc("Get a webhook", "webhooks", response=Webhook, errors=(_NOT_FOUND,)),
    ),
    DocRoute(
        _ONE,
        replace_webhook,
        methods=["PUT"],
        doc=RouteDoc(
            "Replace a webhook",
            "webhooks",
            "The whole webhook (a GET's body can be sent back); without `secrets` one is generated.",
            body=WebhookFields,
            response=Webhook,
            errors=(_NOT_FOUND, *_BAD_FIELDS),
        ),
    ),
    DocRoute(
        _ONE,
        update_webhook,
        methods=["PATCH"],
        doc=RouteDoc(
            "Change a webhook",
            "webhooks",
            "Any of `url`, `events`, `agentId`, `secrets`: they replace the stored ones.",
            body={"type": "object", "additionalProperties": True},
            response=Webhook,
            errors=(_NOT_FOUND, *_BAD_FIELDS),
        ),
    ),
    DocRoute(
        _ONE,
        delete_webhook,
        methods=["DELETE"],
        doc=RouteDoc("Delete a webhook", "webhooks", status=204, errors=(_NOT_FOUND,)),
    ),
]
