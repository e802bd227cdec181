"""Where providers call back about calls callbridge dialled (no API key; signed by the provider).

- `POST /api/calls/{callId}/telephony/status`: status callbacks (ringing, answered, busy, completed...);
- `POST /api/calls/{callId}/telephony/answer`: the XML an answered call runs (providers that fetch it);
- `POST /api/calls/{callId}/telephony/transfer?target=...`: the `<Dial>` XML of a transfer (Plivo).

The signature is checked before the call is looked up (the provider is told by its signature headers or
`?provider=`, as for incoming calls), so an unsigned request learns nothing about which calls exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from app.api.incoming import PROVIDER, detect_provider, verified_webhook
from app.api.route_doc import DocRoute, Param, RouteDoc
from app.errors import InvalidInput, NotFound
from app.metrics import WEBHOOKS
from app.providers.base import WebhookProvider, WebhookRequest
from app.schemas.data_messages import valid_transfer_target
from app.schemas.telephony import TelephonyConfigBase
from app.services import services_of
from app.store.tables import CallRow


@dataclass(frozen=True, slots=True)
class Callback:
    """A verified provider callback about one of its calls."""

    provider: WebhookProvider[Any]
    config: TelephonyConfigBase
    webhook: WebhookRequest
    call: CallRow


async def _verified_callback(request: Request, provider: WebhookProvider[Any]) -> Callback:
    """The callback once its signature verifies (403 otherwise), with its call (404 unless the provider's)."""
    services = services_of(request)
    config, webhook = await verified_webhook(services, request, provider)
    call_id = request.path_params["call_id"]
    row = await services.calls_repo.get(call_id)
    if row is None or row.medium_kind != provider.name:
        raise NotFound("call_not_found", f"no {provider.name} call with id {call_id}")
    return Callback(provider, config, webhook, row)


async def call_status(request: Request) -> Response:
    provider = detect_provider(request)
    outcome = "rejected"
    try:
        callback = await _verified_callback(request, provider)
        update = provider.parse_status(callback.webhook)
        if update is not None:
            await services_of(request).legs.status_update(callback.call, update)
        outcome = "status"
    finally:
        WEBHOOKS.labels(provider.name, outcome).inc()
    return Response(status_code=204)


async def call_answer(request: Request) -> Response:
    services = services_of(request)
    provider = detect_provider(request)
    callback = await _verified_callback(request, provider)
    row = callback.call
    if row.ended is not None:
        return Response(provider.hangup_xml(), media_type="text/xml")
    await services.legs.answered(row, provider.parse_incoming(callback.webhook))
    xml = provider.connect_xml(services.calls.join_url(row.id), row.id, callback.config)
    return Response(xml, media_type="text/xml")


async def transfer_xml(request: Request) -> Response:
    provider = detect_provider(request)
    await _verified_callback(request, provider)
    try:
        target = valid_transfer_target(request.query_params.get("target", ""))
    except ValueError as exc:
        raise InvalidInput("invalid_target", str(exc)) from None
    xml = provider.transfer_xml(target)
    if xml is None:
        raise InvalidInput("transfer_unsupported", f"{provider.name} calls are not transferred with XML")
    return Response(xml, media_type="text/xml")


_NO_CALL = (404, "call_not_found")
_XML = {"type": "string", "description": "The provider's call-control XML."}
ROUTES = [
    DocRoute(
        "/api/calls/{call_id}/telephony/status",
        call_status,
        methods=["POST"],
        doc=RouteDoc(
            "A provider's status callback",
            "provider-facing",
            "Ringing, answered, busy, completed...: the call's leg follows it.",
            status=204,
            params=(PROVIDER,),
            errors=(_NO_CALL,),
            signed=True,
        ),
    ),
    DocRoute(
        "/api/calls/{call_id}/telephony/answer",
        call_answer,
        methods=["GET", "POST"],
        doc=RouteDoc(
            "The XML an answered call runs",
            "provider-facing",
            "For providers that fetch it when the callee answers: connects the call to its joinUrl.",
            response=_XML,
            media_type="text/xml",
            params=(PROVIDER,),
            errors=(_NO_CALL,),
            signed=True,
        ),
    ),
    DocRoute(
        "/api/calls/{call_id}/telephony/transfer",
        transfer_xml,
        methods=["GET", "POST"],
        doc=RouteDoc(
            "The `<Dial>` XML of a transfer (Plivo)",
            "provider-facing",
            response=_XML,
            media_type="text/xml",
            params=(PROVIDER, Param("target", "An E.164 number or a sip: URI.")),
            errors=(_NO_CALL, (400, "invalid_target"), (400, "transfer_unsupported")),
            signed=True,
        ),
    ),
]
