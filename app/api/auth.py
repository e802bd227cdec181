"""`X-API-Key` authentication for every `/api/...` route that is not provider-facing."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_response
from app.services import Services

HEADER = "x-api-key"


class ApiKeyMiddleware:
    """Rejects requests without a valid key with 401 (keys from the environment or `api-keys create`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        services: Services = scope["app"].state.services
        key = next((v.decode("latin-1") for k, v in scope["headers"] if k == HEADER.encode()), None)
        if key is None:
            response = error_response(401, "missing_api_key", "this endpoint needs an X-API-Key header")
        elif await _valid(services, key):
            await self.app(scope, receive, send)
            return
        else:
            response = error_response(401, "invalid_api_key", "the X-API-Key is not valid")
        await response(scope, receive, send)


async def _valid(services: Services, key: str) -> bool:
    if any(hmac.compare_digest(key.encode(), k.encode()) for k in services.settings.static_api_keys):
        return True
    return await services.api_keys.verify(key)
