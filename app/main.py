"""`create_app(settings)`: the Starlette app, its routes, and the lifespan that starts the services."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount

from app.api import (
    agents,
    batches,
    calls,
    console,
    docs,
    health,
    incoming,
    live,
    provider_callbacks,
    sip,
    sip_registrations,
    telephony_configs,
    webhooks,
)
from app.api.auth import ApiKeyMiddleware
from app.api.body_limit import BodyLimit, BodyLimitMiddleware, RouteBodyLimits
from app.api.errors import EXCEPTION_HANDLERS
from app.api.streams import STREAM_ROUTE
from app.services import Services
from app.settings import Settings
from app.webrtc import routes as webrtc_routes


def create_app(settings: Settings | None = None) -> Starlette:
    """The callbridge ASGI app. Services start (database migrated) in the lifespan."""
    settings = settings or Settings()
    services = Services.build(settings)
    # Data messages for calls held here, and consoles' levels requests (app.api.live), from other instances.
    services.control_handler = functools.partial(live.control, services, live.ForwardedLevels(services))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.stop()

    routes = [
        *health.ROUTES,
        *docs.ROUTES,  # the spec and its docs page: public, like the health routes
        *console.ROUTES,  # the console's page and files: public (its data comes from /api, with a key)
        # Provider-facing routes come before the API mount: they authenticate by provider signature.
        *incoming.ROUTES,
        *provider_callbacks.ROUTES,
        STREAM_ROUTE,
        *webrtc_routes.ROUTES,
        Mount(
            "/api",
            routes=[
                *agents.ROUTES,
                *batches.ROUTES,
                *live.ROUTES,  # before calls': `/calls/stream` is not a call id
                *calls.ROUTES,
                *telephony_configs.ROUTES,
                *sip.ROUTES,
                *sip_registrations.ROUTES,
                *webhooks.ROUTES,
            ],
            middleware=[Middleware(ApiKeyMiddleware)],
        ),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(BodyLimitMiddleware, limits=body_limits(settings))],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
    )
    app.state.services = services
    return app


def body_limits(settings: Settings) -> RouteBodyLimits:
    """Body limits: CALLBRIDGE_MAX_BODY_BYTES, CALLBRIDGE_MAX_WEBHOOK_BODY_BYTES for provider webhooks, and
    32 MiB for creating a scheduled batch."""
    webhook = BodyLimit(settings.max_webhook_body_bytes, settings.body_read_timeout)
    provider_facing = (*incoming.ROUTES, *provider_callbacks.ROUTES)
    batch = BodyLimit(batches.BATCH_MAX_BODY_BYTES, batches.BATCH_BODY_READ_TIMEOUT_S)
    return RouteBodyLimits(
        BodyLimit(settings.max_body_bytes, settings.body_read_timeout),
        {**{route.path: webhook for route in provider_facing}, "/api" + batches.BATCHES_PATH: batch},
    )
