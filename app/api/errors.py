"""Error responses: always `{"detail": "...", "code": "..."}`, never a stack trace or a secret."""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.errors import InvalidInput, ServiceError

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    422: "call_not_active",
    429: "too_many_requests",
}


def error_body(code: str, detail: str) -> dict[str, str]:
    """Every error's JSON body."""
    return {"detail": detail, "code": code}


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, detail), status_code=status, headers=headers)


def describe_validation_error(exc: ValidationError) -> str:
    """`callTemplate.joinTimeout: invalid duration ...; name: Field required` (paths in JSON names)."""
    parts = []
    for error in exc.errors(include_url=False)[:5]:
        path = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-"))
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{path}: {message}" if path else message)
    return "; ".join(parts)


async def json_object(request: Request) -> dict[str, Any]:
    """The request's JSON body, which must be an object (an empty body is `{}`); 400 otherwise.

    The body is bounded by `body_limit.BodyLimitMiddleware` before it is read.
    """
    raw = await request.body()
    try:
        data: Any = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise InvalidInput("invalid_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput("invalid_json", "request body must be a JSON object")
    return data


def validated(model: type[M], data: Any, where: str = "", codes: Collection[str] = ()) -> M:
    """`data` as `model`; 400 naming the failing paths (prefixed by `where`), its code the first error type
    found in `codes` (a model's own error codes, such as `no_calls`), else `invalid_request`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        types = [error["type"] for error in exc.errors()]
        code = next((t for t in types if t in codes), "invalid_request")
        raise InvalidInput(code, where + describe_validation_error(exc)) from None


async def parse_body(request: Request, model: type[M]) -> M:
    """The request's JSON body validated as `model`; 400 with the failing paths otherwise."""
    return validated(model, await json_object(request))


async def handle_service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return error_response(exc.status, exc.code, exc.detail, exc.headers)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "internal server error")


EXCEPTION_HANDLERS = {
    ServiceError: handle_service_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
