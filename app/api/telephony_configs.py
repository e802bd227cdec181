"""`/api/telephony_configs/{provider}`: imported credentials, one config per provider."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.api.errors import describe_validation_error, json_object
from app.api.route_doc import DocRoute, RouteDoc
from app.errors import Conflict, InvalidInput, NotFound
from app.schemas.telephony import CONFIG_MODELS, SECRET_PREFIX_LENGTH, TelephonyConfigBase
from app.services import Services, services_of
from app.store.tables import TelephonyConfigRow


def _model(request: Request) -> tuple[str, type[TelephonyConfigBase]]:
    provider = request.path_params["provider"]
    model = CONFIG_MODELS.get(provider)
    if model is None:
        raise NotFound(
            "unknown_provider", f"no telephony provider {provider!r}; known: {', '.join(CONFIG_MODELS)}"
        )
    return provider, model


def _view(config: TelephonyConfigBase, row: TelephonyConfigRow) -> dict[str, Any]:
    stamps = {"created": row.created, "updated": row.updated}
    return {**config.public_view(), **TypeAdapter(dict[str, datetime]).dump_python(stamps, mode="json")}


def _validate(model: type[TelephonyConfigBase], data: dict[str, Any]) -> TelephonyConfigBase:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput("invalid_request", describe_validation_error(exc)) from None


async def _save(services: Services, provider: str, config: TelephonyConfigBase) -> Response:
    public, secrets = config.split()
    row = await services.telephony_configs.put(provider, public, secrets)
    return JSONResponse(_view(config, row), status_code=200)


async def get_config(request: Request) -> Response:
    provider, model = _model(request)
    found = await services_of(request).telephony_configs.get(provider)
    if found is None:
        raise NotFound("telephony_config_not_found", f"no {provider} credentials have been imported")
    fields, row = found
    return JSONResponse(_view(model.model_validate(fields), row))


async def create_config(request: Request) -> Response:
    provider, model = _model(request)
    services = services_of(request)
    config = _validate(model, await json_object(request))
    if await services.telephony_configs.get(provider) is not None:
        raise Conflict(
            "telephony_config_exists", f"{provider} credentials exist already; PATCH or DELETE them"
        )
    response = await _save(services, provider, config)
    response.status_code = 201
    return response


async def update_config(request: Request) -> Response:
    provider, model = _model(request)
    services = services_of(request)
    found = await services.telephony_configs.get(provider)
    if found is None:
        raise NotFound("telephony_config_not_found", f"no {provider} credentials have been imported")
    patch = await json_object(request)
    stored = model.model_validate(found[0]).model_dump(mode="json", by_alias=True)
    return await _save(services, provider, _validate(model, {**stored, **patch}))


async def delete_config(request: Request) -> Response:
    provider, _ = _model(request)
    if not await services_of(request).telephony_configs.delete(provider):
        raise NotFound("telephony_config_not_found", f"no {provider} credentials have been imported")
    return Response(status_code=204)


_PATH = "/telephony_configs/{provider}"
_MODELS = tuple(CONFIG_MODELS.values())
_PROVIDERS = ", ".join(f"`{name}`: {model.__name__}" for name, model in CONFIG_MODELS.items())


def view_schema(model: type[TelephonyConfigBase]) -> dict[str, Any]:
    """The JSON Schema of `_view(model)`: its fields, each secret as `<name>Prefix`, and the timestamps."""
    schema = model.model_json_schema(by_alias=True, mode="serialization")
    assert "$defs" not in schema, "a config model with nested models needs its $defs placed"
    properties, required = schema["properties"], set(schema.get("required", ()))
    for name in model.secret_fields:
        alias = model.model_fields[name].alias or name
        properties.pop(alias)
        properties[f"{alias}Prefix"] = {"type": "string", "maxLength": SECRET_PREFIX_LENGTH}
        if alias in required:
            required = (required - {alias}) | {f"{alias}Prefix"}
    stamp = {"type": "string", "format": "date-time"}
    properties |= {"created": stamp, "updated": stamp}
    return {**schema, "title": f"{model.__name__}View", "required": sorted(required | {"created", "updated"})}


def patch_schema(model: type[TelephonyConfigBase]) -> dict[str, Any]:
    """The JSON Schema of a PATCH for `model`: any of its fields (merged with the stored ones, checked)."""
    schema = model.model_json_schema(by_alias=True)
    assert "$defs" not in schema, "a config model with nested models needs its $defs placed"
    schema.pop("required", None)
    return {**schema, "title": f"{model.__name__}Patch"}


_VIEW = {"oneOf": [view_schema(model) for model in _MODELS]}
_PATCH = {"anyOf": [patch_schema(model) for model in _MODELS]}
_NO_PROVIDER = (404, "unknown_provider")
_NO_CONFIG = (404, "telephony_config_not_found")
ROUTES = [
    DocRoute(
        _PATH,
        get_config,
        methods=["GET"],
        doc=RouteDoc(
            "Get a provider's imported credentials",
            "telephony",
            response=_VIEW,
            errors=(_NO_PROVIDER, _NO_CONFIG),
        ),
    ),
    DocRoute(
        _PATH,
        create_config,
        methods=["POST"],
        doc=RouteDoc(
            "Import a provider's credentials",
            "telephony",
            f"The body is the model of `provider` ({_PROVIDERS}).",
            body=_MODELS,
            example={"accountSid": "AC0123456789abcdef0123456789abcdef", "authToken": "example-auth-token"},
            response=_VIEW,
            status=201,
            errors=(_NO_PROVIDER, (409, "telephony_config_exists")),
        ),
    ),
    DocRoute(
        _PATH,
        update_config,
        methods=["PATCH"],
        doc=RouteDoc(
            "Change a provider's credentials",
            "telephony",
            f"The fields given replace the stored ones; the result is validated as the model of `provider` "
            f"({_PROVIDERS}).",
            body=_PATCH,
            example={"callCreationAllowAllAgents": True},
            response=_VIEW,
            errors=(_NO_PROVIDER, _NO_CONFIG),
        ),
    ),
    DocRoute(
        _PATH,
        delete_config,
        methods=["DELETE"],
        doc=RouteDoc(
            "Delete a provider's credentials", "telephony", status=204, errors=(_NO_PROVIDER, _NO_CONFIG)
        ),
    ),
]
