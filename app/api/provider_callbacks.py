"""Where providers call back about calls callbridge dialled (no API key; signed by the provider).

- `POST /api/calls/{callId}/telephony/status`: status callbacks (ringing, answered, busy, completed...);
- `POST /api/calls/{callId}/telephony/answer`: the XML an answered call runs (providers that fetch it);
- `POST /api/calls/{callId}/telephony/transfer?target=...`: the `<Dial>` XML of a transfer (Plivo).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api.incoming import verified_webhook
from app.errors import InvalidInput, NotFound
from app.metrics import WEBHOOKS
from app.providers import get_provider
from app.providers.base import WebhookProvider
from app.schemas.data_messages import valid_transfer_target
from app.services import Services, services_of
from app.store.tables import CallRow

#: What an answered call that callbridge no longer wants runs: hang up (Twilio, TeXML and Plivo alike).
HANGUP_XML = '<?xml version="1.0" encoding="UTF-8"?><Response><Hangup/></Response>'


async def _call_and_provider(services: Services, request: Request) -> tuple[CallRow, WebhookProvider[Any]]:
    call_id = request.path_params["call_id"]
    row = await services.calls_repo.get(call_id)
    provider = get_provider(row.medium_kind) if row else None
    if row is None or not isinstance(provider, WebhookProvider):
        raise NotFound(
            "call_not_found", f"no {provider.name if provider else 'provider'} call with id {call_id}"
        )
    return row, provider


async def call_status(request: Request) -> Response:
    services = services_of(request)
    row, provider = await _call_and_provider(services, request)
    outcome = "rejected"
    try:
        _, webhook = await verified_webhook(services, request, provider)
        update = provider.parse_status(webhook)
        if update is not None:
            await services.legs.status_update(row, update)
        outcome = "status"
    finally:
        WEBHOOKS.labels(provider.name, outcome).inc()
    return Response(status_code=204)


async def call_answer(request: Request) -> Response:
    services = services_of(request)
    row, provider = await _call_and_provider(services, request)
    config, webhook = await verified_webhook(services, request, provider)
    if row.ended is not None:
        return Response(HANGUP_XML, media_type="text/xml")
    await services.legs.answered(row, provider.parse_incoming(webhook))
    xml = provider.connect_xml(services.calls.join_url(row.id), row.id, config)
    return Response(xml, media_type="text/xml")


async def transfer_xml(request: Request) -> Response:
    services = services_of(request)
    _, provider = await _call_and_provider(services, request)
    await verified_webhook(services, request, provider)
    try:
        target = valid_transfer_target(request.query_params.get("target", ""))
    except ValueError as exc:
        raise InvalidInput("invalid_target", str(exc)) from None
    return Response(provider.transfer_xml(target), media_type="text/xml")


ROUTES = [
    Route("/api/calls/{call_id}/telephony/status", call_status, methods=["POST"]),
    Route("/api/calls/{call_id}/telephony/answer", call_answer, methods=["GET", "POST"]),
    Route("/api/calls/{call_id}/telephony/transfer", transfer_xml, methods=["GET", "POST"]),
]
