"""What each route documents about itself for `GET /openapi.json` (`app.api.openapi` reads it).

A route is declared once, with its doc: `DocRoute(path, endpoint, methods=[...], doc=RouteDoc(...))`. The
models named here are the ones the handler parses and serializes, so the spec is built from them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import ASGIApp

#: A body or response: a model, one of several models (`oneOf`), or a JSON Schema written out.
Schema = type[BaseModel] | tuple[type[BaseModel], ...] | dict[str, Any]


@dataclass(frozen=True, slots=True)
class Param:
    """A query parameter or a request header (path parameters come from the route's path)."""

    name: str
    description: str
    location: Literal["query", "header"] = "query"
    schema: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RouteDoc:
    """One route's documentation. `errors` are the route's own `(status, code)` pairs; the generator adds
    those every route of its kind can answer (API key, body, paging, provider signature)."""

    summary: str
    tag: str
    description: str = ""
    body: Schema | None = None
    #: The body's media type (a WHIP offer is `application/sdp`).
    body_media_type: str = "application/json"
    example: dict[str, Any] | None = None
    response: Schema | None = None
    status: int = 200
    media_type: str = "application/json"
    #: The response is a cursor page `{results: [response], next, previous, total}`.
    paged: bool = False
    params: tuple[Param, ...] = ()
    errors: tuple[tuple[int, str], ...] = ()
    #: Provider-facing: no API key, the provider's signature checked instead.
    signed: bool = False


class DocRoute(Route):
    """A Starlette `Route` carrying its `RouteDoc`."""

    def __init__(self, path: str, endpoint: Callable[..., Any], *, methods: list[str], doc: RouteDoc) -> None:
        super().__init__(path, endpoint, methods=methods)
        self.doc = doc


class DocMount(Mount):
    """A `Mount` of one ASGI app (static files), documented as `GET {path}/{path}`."""

    def __init__(self, path: str, app: ASGIApp, *, name: str, doc: RouteDoc) -> None:
        super().__init__(path, app=app, name=name)
        self.doc = doc


class DocWebSocketRoute(WebSocketRoute):
    """A `WebSocketRoute` carrying its `RouteDoc` (listed under the spec's `x-websockets`)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], *, doc: RouteDoc) -> None:
        super().__init__(path, endpoint)
        self.doc = doc
