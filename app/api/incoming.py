"""`POST /api/agents/{agentId}/telephony_xml`: a provider's incoming-call webhook (no API key).

The provider is identified by its signature header (or `?provider=`), the signature is verified with the
imported credentials, and the answer is the provider's XML that connects the call to a fresh joinUrl.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from app.api.route_doc import DocRoute, Param, RouteDoc
from app.calls.service import CallOrigin, Creation
from app.calls.start import refuse_if_not_taking_calls
from app.calls.templates import map_request_context
from app.errors import Forbidden, InvalidInput, NotFound
from app.metrics import WEBHOOKS
from app.providers import get_provider, provider_signing, webhook_providers
from app.providers.base import WebhookProvider, WebhookRequest
from app.schemas.calls import StartAgentCallRequest
from app.services import Services, services_of


def public_url(services: Services, request: Request) -> str:
    """The URL the provider called, as it saw it: CALLBRIDGE_PUBLIC_URL + path (+ query)."""
    url = services.settings.base_url + request.url.path
    return f"{url}?{request.url.query}" if request.url.query else url


def detect_provider(request: Request) -> WebhookProvider[Any]:
    """The provider named by `?provider=`, else the one whose signature headers the request carries."""
    name = request.query_params.get("provider")
    if name is None:
        signing = provider_signing({k.lower(): v for k, v in request.headers.items()})
        if signing is None:
            raise Forbidden("signature_missing", "no provider signature headers on the request")
        return signing
    provider = get_provider(name)
    if isinstance(provider, WebhookProvider):
        return provider
    known = ", ".join(p.name for p in webhook_providers())
    if provider is not None:
        raise InvalidInput(
            "no_incoming_webhook",
            f"{name} sends no incoming-call webhook: create the call with medium {{{name!r}: {{}}}} "
            "and give its joinUrl to the provider",
        )
    raise InvalidInput("unknown_provider", f"unknown provider {name!r}; known: {known}")


async def verified_webhook(
    services: Services, request: Request, provider: WebhookProvider[Any]
) -> tuple[Any, WebhookRequest]:
    """(the provider's imported config, the request) once its signature verifies; 403 otherwise."""
    config = await services.telephony_configs.load(provider.name, provider.config_model)
    if config is None:
        raise Forbidden("telephony_config_missing", f"no {provider.name} credentials imported to verify with")
    body = await request.body()  # first: Starlette parses the form from the cached body
    form = await request.form() if _is_form(request) else None
    webhook = WebhookRequest(
        url=public_url(services, request),
        method=request.method,
        headers={k.lower(): v for k, v in request.headers.items()},
        body=body,
        form=form,
    )
    if not provider.verify(webhook, config):
        raise Forbidden("invalid_signature", f"the {provider.name} signature does not match")
    return config, webhook


async def telephony_xml(request: Request) -> Response:
    """The provider's XML for a new call: checked signature first, so an unsigned request learns nothing."""
    services = services_of(request)
    provider = detect_provider(request)
    outcome = "rejected"
    try:
        config, webhook = await verified_webhook(services, request, provider)
        if services.draining:
            outcome = "draining"
            return Response(provider.hangup_xml(), media_type="text/xml")
        refuse_if_not_taking_calls(services)  # Redis unreachable: 503, so the provider tries its fallback
        agent_id = request.path_params["agent_id"]
        agent = await services.agents.get(agent_id)
        if agent is None:
            raise NotFound("agent_not_found", f"no agent with id {agent_id}")
        if not config.allows_agent(agent.id):
            raise Forbidden("agent_not_allowed", f"{provider.name} calls may not use agent {agent.id}")
        incoming = provider.parse_incoming(webhook)
        origin = CallOrigin(
            provider=provider.name,
            incoming=incoming,
            request_context=map_request_context(incoming.fields, config.request_context_mapping),
            stream_options=provider.stream_options(config),
            stream_signed=provider.signs_streams,
        )
        call, _ = await services.calls.create_agent_call(agent, StartAgentCallRequest(), Creation(origin))
        outcome = "accepted"
    finally:
        WEBHOOKS.labels(provider.name, outcome).inc()
    xml = provider.connect_xml(services.calls.join_url(call.id), call.id, config)
    return Response(xml, media_type="text/xml")


def _is_form(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    return content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data"))


#: `?provider=`: names the provider where its signature headers would not tell (provider-facing routes).
PROVIDER = Param("provider", "The provider (twilio, telnyx, plivo); else told by its signature headers.")
_XML = {"type": "string", "description": "The provider's call-control XML (TwiML, TeXML, Plivo XML)."}
ROUTES = [
    DocRoute(
        "/api/agents/{agent_id}/telephony_xml",
        telephony_xml,
        methods=["POST"],
        doc=RouteDoc(
            "A provider's incoming-call webhook",
            "provider-facing",
            "Creates a call of the agent and answers the XML that connects it to its joinUrl (a hang-up "
            "while draining).",
            response=_XML,
            media_type="text/xml",
            params=(PROVIDER,),
            errors=(
                (403, "agent_not_allowed"),
                (404, "agent_not_found"),
                (429, "too_many_calls"),
                (503, "cluster_unavailable"),
            ),
            signed=True,
        ),
    )
]
