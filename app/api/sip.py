"""`/api/sip`: the account SIP config (Ultravox-shaped): who may call in, which agent answers, and the
fallback handler asked about INVITEs nothing matches."""

from __future__ import annotations

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.api.errors import describe_validation_error, json_object
from app.api.route_doc import DocRoute, RouteDoc
from app.errors import InvalidInput
from app.schemas.sip import SIP_ERROR_CODES, SipConfig, SipConfigFields, SipConfigUpdate
from app.services import Services, services_of
from app.sip.config import sip_domain


def _view(services: Services, config: SipConfigFields, *, with_secrets: bool = False) -> Response:
    shown = SipConfig.shown(config, sip_domain(services.settings), with_secrets=with_secrets)
    return JSONResponse(shown.to_json())


def _parse_update(data: dict[str, object]) -> SipConfigUpdate:
    """The PATCH body; 400 with the first specific code (`invalid_cidr`, `invalid_pattern`...) if any."""
    try:
        return SipConfigUpdate.model_validate(data)
    except ValidationError as exc:
        types = [error["type"] for error in exc.errors()]
        code = next((t for t in types if t in SIP_ERROR_CODES), "invalid_request")
        raise InvalidInput(code, describe_validation_error(exc)) from None


async def _check_agents_exist(services: Services, config: SipConfigFields) -> None:
    for agent in config.allowed_agents:
        if await services.agents.get(agent.agent_id) is None:
            raise InvalidInput("agent_not_found", f"allowedAgents: no agent with id {agent.agent_id}")


async def get_sip_config(request: Request) -> Response:
    services = services_of(request)
    return _view(services, await services.sip_policy.load())


async def update_sip_config(request: Request) -> Response:
    """PATCH: the fields given replace the stored ones; the new policy applies to the next INVITE.

    A fallback handler's generated secrets are shown in this response, and never again."""
    services = services_of(request)
    patch = _parse_update(await json_object(request))
    domain = sip_domain(services.settings)
    if patch.domain is not None and patch.domain != domain:
        raise InvalidInput("read_only", f"domain is read-only (it is {domain}; set CALLBRIDGE_SIP_DOMAIN)")
    if "allowed_agents" in patch.model_fields_set:
        await _check_agents_exist(services, patch)
    current = await services.sip_policy.load()
    handler = patch.fallback_handler
    generated = handler is not None and handler.generates_secret(current.fallback_handler)
    stored = await services.sip_policy.update(current.updated(patch))
    return _view(services, stored, with_secrets=generated)


_SHOWN = (
    "`fallbackHandler` shows `url` and `secretPrefixes` (its `secrets` only in the PATCH that generated one)."
)
ROUTES = [
    DocRoute(
        "/sip",
        get_sip_config,
        methods=["GET"],
        doc=RouteDoc("Get the SIP config", "sip", _SHOWN, response=SipConfig),
    ),
    DocRoute(
        "/sip",
        update_sip_config,
        methods=["PATCH"],
        doc=RouteDoc(
            "Change the SIP config",
            "sip",
            "The fields given replace the stored ones; the next INVITE gets the new policy. " + _SHOWN,
            body=SipConfigUpdate,
            example={"allowedCidrRanges": ["203.0.113.0/24"], "allowAllAgents": True},
            response=SipConfig,
            errors=(
                *((400, code) for code in sorted(SIP_ERROR_CODES)),
                (400, "read_only"),
                (400, "agent_not_found"),
            ),
        ),
    ),
]
