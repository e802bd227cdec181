"""The OpenAPI 3.1 document of the app, built from its routes and their `RouteDoc`s (served by `docs`).

The component schemas are the pydantic models the handlers validate with (camelCase aliases, as on the
wire), so the spec cannot drift from what the API accepts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue, models_json_schema
from pydantic_core import CoreSchema, core_schema
from starlette.routing import BaseRoute, Mount

from app.api.auth import ApiKeyMiddleware
from app.api.route_doc import DocMount, DocRoute, DocWebSocketRoute, Param, RouteDoc, Schema
from app.providers import webhook_providers
from app.store.paging import MAX_PAGE_SIZE

REF = "#/components/schemas/{model}"
ERROR = {
    "type": "object",
    "required": ["detail", "code"],
    "properties": {"detail": {"type": "string"}, "code": {"type": "string"}},
    "additionalProperties": False,
}
PROVIDER_SIGNATURE = (
    "Provider-facing: no API key. The request must carry its provider's signature headers ("
    + "; ".join(f"{p.name}: {', '.join(p.signature_headers)}" for p in webhook_providers())
    + "), checked with the credentials imported at `/api/telephony_configs/{provider}`."
)
_BODY_ERRORS = (
    (400, "invalid_json"),
    (400, "invalid_request"),
    (408, "body_timeout"),
    (413, "body_too_large"),
)
_PAGE_ERRORS = ((400, "invalid_cursor"), (400, "invalid_page_size"))
_KEY_ERRORS = ((401, "missing_api_key"), (401, "invalid_api_key"))
_SIGNED_ERRORS = (
    (400, "unknown_provider"),
    (400, "no_incoming_webhook"),
    (403, "signature_missing"),
    (403, "telephony_config_missing"),
    (403, "invalid_signature"),
)
_PAGE_PARAMS = (
    Param("cursor", "A page's `next` or `previous` cursor."),
    Param(
        "pageSize",
        f"Results per page (1-{MAX_PAGE_SIZE}).",
        schema={"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
    ),
)
_PATH_PARAM = re.compile(r"{(\w+)(?::\w+)?}")


@dataclass(frozen=True, slots=True)
class Operation:
    """One HTTP method of one route, where the spec documents it."""

    path: str
    method: str
    operation_id: str
    doc: RouteDoc
    api_key: bool


def operations(routes: Sequence[BaseRoute], prefix: str = "", api_key: bool = False) -> Iterator[Operation]:
    """Every HTTP operation the routes serve (Mounts walked); TypeError for a route without a RouteDoc."""
    for route in routes:
        if isinstance(route, DocRoute):
            methods = sorted((route.methods or set()) - {"HEAD"})
            for method in methods:
                op_id = route.name if len(methods) == 1 else f"{route.name}_{method.lower()}"
                yield Operation(prefix + route.path, method.lower(), op_id, route.doc, api_key)
        elif isinstance(route, DocMount):
            yield Operation(f"{prefix}{route.path}/{{path}}", "get", route.name, route.doc, api_key)
        elif isinstance(route, Mount):
            yield from operations(route.routes, prefix + route.path, api_key or _needs_key(route))
        elif not isinstance(route, DocWebSocketRoute):
            raise TypeError(f"route {getattr(route, 'path', route)!r} has no RouteDoc")


def _needs_key(mount: Mount) -> bool:
    """Whether the Mount's middleware stack (which wraps its router) checks the API key."""
    app = mount.app
    while app is not None:
        if isinstance(app, ApiKeyMiddleware):
            return True
        app = getattr(app, "app", None)
    return False


def _models(schema: Schema | None) -> tuple[type[BaseModel], ...]:
    if isinstance(schema, type):
        return (schema,)
    return schema if isinstance(schema, tuple) else ()


class WireDefaults(GenerateJsonSchema):
    """Request bodies' defaults as the API writes them (`"30s"`, not `30.0`): pydantic applies a field's
    plain serializer to its default only in serialization mode."""

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        json_schema = super().default_schema(schema)
        serialize = _plain_serializer(schema["schema"])
        if self.mode == "validation" and "default" in json_schema and serialize is not None:
            default = self.get_default_value(schema)
            json_schema["default"] = default if default is None else serialize(default)
        return json_schema


def _plain_serializer(schema: CoreSchema) -> Callable[[Any], Any] | None:
    """The plain serializer of an `Annotated` type, under its validators (as `Duration` has one)."""
    while True:
        ser: Any = schema.get("serialization")
        if ser is not None and ser["type"] == "function-plain" and not ser.get("info_arg"):
            return ser["function"]
        if schema["type"] not in ("function-before", "function-after", "function-wrap"):
            return None
        schema = schema["schema"]  # type: ignore[typeddict-item]


SchemaOf = Callable[[Schema, JsonSchemaMode], dict[str, Any]]


def build_spec(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `routes` (an app's `routes`)."""
    ops = list(operations(routes))
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {}
    for op in ops:  # bodies as the API validates them, responses as it serializes them
        wanted |= {(m, "validation"): None for m in _models(op.doc.body)}
        wanted |= {(m, "serialization"): None for m in _models(op.doc.response)}
    refs, defs = models_json_schema(
        list(wanted), by_alias=True, ref_template=REF, schema_generator=WireDefaults
    )

    def schema_of(of: Schema, mode: JsonSchemaMode) -> dict[str, Any]:
        if isinstance(of, dict):
            return of
        found = [refs[(m, mode)] for m in _models(of)]
        return found[0] if len(found) == 1 else {"oneOf": found}

    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        paths.setdefault(op.path, {})[op.method] = _operation(op, schema_of)
    websockets = {
        r.path: {"summary": r.doc.summary, "description": r.doc.description}
        for r in routes
        if isinstance(r, DocWebSocketRoute)
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "callbridge", "version": version("callbridge")},
        "paths": paths,
        "components": {
            "schemas": {**defs.get("$defs", {}), "Error": ERROR},
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
        "x-websockets": websockets,
    }


def _operation(op: Operation, schema_of: SchemaOf) -> dict[str, Any]:
    doc = op.doc
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(op.path)
    ]
    params += [
        {
            "name": p.name,
            "in": p.location,
            "description": p.description,
            "schema": p.schema or {"type": "string"},
        }
        for p in doc.params + (_PAGE_PARAMS if doc.paged else ())
    ]
    described = [doc.description, PROVIDER_SIGNATURE if doc.signed else ""]
    spec: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": doc.summary,
        "tags": [doc.tag],
        "description": "\n\n".join(filter(None, described)),
        "parameters": params,
        "security": [{"apiKey": []}] if op.api_key else [],
    }
    if doc.signed:
        spec["x-provider-signature"] = True
    errors = [*doc.errors, *(_KEY_ERRORS if op.api_key else ()), *(_SIGNED_ERRORS if doc.signed else ())]
    errors += _PAGE_ERRORS if doc.paged else ()
    if doc.body is not None or (doc.signed and op.method == "post"):
        spec["requestBody"] = _request_body(doc, schema_of)
        errors += _BODY_ERRORS
    spec["responses"] = {str(doc.status): _success(doc, schema_of), **_errors(errors)}
    return spec


def _request_body(doc: RouteDoc, schema_of: SchemaOf) -> dict[str, Any]:
    if doc.body is None:  # a provider's webhook: its own fields, form-encoded or JSON
        free = {"schema": {"type": "object", "additionalProperties": True}}
        return {
            "required": False,
            "content": {"application/x-www-form-urlencoded": free, "application/json": free},
        }
    content: dict[str, Any] = {"schema": schema_of(doc.body, "validation")}
    if doc.example is not None:
        content["example"] = doc.example
    return {"required": True, "content": {doc.body_media_type: content}}


def _success(doc: RouteDoc, schema_of: SchemaOf) -> dict[str, Any]:
    if doc.response is None:
        return {"description": "Success (no body)." if doc.status == 204 else "Success."}
    body = schema_of(doc.response, "serialization")
    if doc.paged:
        body = {
            "type": "object",
            "required": ["results", "next", "previous", "total"],
            "properties": {
                "results": {"type": "array", "items": body},
                "next": {"type": ["string", "null"], "description": "URL of the next page"},
                "previous": {"type": ["string", "null"], "description": "URL of the previous page"},
                "total": {"type": "integer"},
            },
        }
    return {"description": "Success.", "content": {doc.media_type: {"schema": body}}}


def _errors(errors: list[tuple[int, str]]) -> dict[str, Any]:
    codes: dict[int, list[str]] = {}
    for status, code in errors:
        found = codes.setdefault(status, [])
        if code not in found:
            found.append(code)
    return {
        str(status): {
            "description": "Error codes: " + ", ".join(f"`{c}`" for c in found),
            "content": {
                "application/json": {
                    "schema": {
                        "allOf": [{"$ref": REF.format(model="Error")}],
                        "properties": {"code": {"enum": found}},
                    }
                }
            },
        }
        for status, found in sorted(codes.items())
    }
