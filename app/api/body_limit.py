"""Bounded request bodies, enforced before any route reads them (pure ASGI, so nothing is buffered first).

A body whose `Content-Length` is over its route's limit is refused with 413 before a byte of it is read; a
body that streams past the limit (chunked, or a `Content-Length` that lies) is cut at the limit with 413;
and a body that takes longer than its read timeout to arrive (a slow sender holding the request open) gets
408. Every refusal closes the connection, so the rest of the body is never waited for.

Limits are per route template: provider webhooks are small, API bodies larger, and a route that needs more
(batch creation) gets its own entry in `RouteBodyLimits`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.responses import JSONResponse
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response
from app.errors import ServiceError

#: Refusals end the connection: the unread rest of the body is not worth waiting for.
_CLOSE = {"Connection": "close"}


@dataclass(frozen=True, slots=True)
class BodyLimit:
    """How large a request body may be, and how long it may take to arrive (from the first read)."""

    max_bytes: int
    read_timeout_s: float


class BodyTooLarge(ServiceError):
    status = 413

    def __init__(self, limit: BodyLimit) -> None:
        super().__init__(
            "body_too_large", f"the request body is over this route's {limit.max_bytes} bytes", headers=_CLOSE
        )


class BodyReadTimeout(ServiceError):
    status = 408

    def __init__(self, limit: BodyLimit) -> None:
        super().__init__(
            "body_timeout",
            f"the request body did not arrive within {limit.read_timeout_s:g}s",
            headers=_CLOSE,
        )


class RouteBodyLimits:
    """The body limit of each request path: the first route template that matches, else the default."""

    def __init__(self, default: BodyLimit, routes: Mapping[str, BodyLimit]) -> None:
        self.default = default
        self._routes: list[tuple[re.Pattern[str], BodyLimit]] = [
            (compile_path(template)[0], limit) for template, limit in routes.items()
        ]

    def for_path(self, path: str) -> BodyLimit:
        return next((limit for pattern, limit in self._routes if pattern.match(path)), self.default)


class BodyLimitMiddleware:
    """Applies `RouteBodyLimits` to every HTTP request (WebSockets pass through)."""

    def __init__(self, app: ASGIApp, limits: RouteBodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.for_path(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit.max_bytes:
            await _refusal(BodyTooLarge(limit))(scope, receive, send)
            return
        body = _LimitedBody(receive, limit)
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, body.receive, tracked_send)
        except (BodyTooLarge, BodyReadTimeout) as exc:  # read outside a route's error handling
            if started:
                raise
            await _refusal(exc)(scope, receive, send)


class _LimitedBody:
    """`receive` for the app: raises BodyTooLarge past the limit, BodyReadTimeout past the deadline."""

    def __init__(self, receive: Receive, limit: BodyLimit) -> None:
        self._receive = receive
        self._limit = limit
        self._received = 0
        self._complete = False
        self._deadline: float | None = None

    async def receive(self) -> Message:
        if self._complete:  # the body is in: what follows (a disconnect) may take as long as it likes
            return await self._receive()
        loop = asyncio.get_running_loop()
        if self._deadline is None:
            self._deadline = loop.time() + self._limit.read_timeout_s
        try:
            async with asyncio.timeout_at(self._deadline):
                message = await self._receive()
        except TimeoutError:
            raise BodyReadTimeout(self._limit) from None
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > self._limit.max_bytes:
                raise BodyTooLarge(self._limit)
            self._complete = not message.get("more_body", False)
        else:
            self._complete = True
        return message


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _refusal(exc: ServiceError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.detail, exc.headers)
