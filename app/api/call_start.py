"""Creating a call from the API: idempotency keys, then `create_and_dial` (drains, dialling `outgoing`)."""

from __future__ import annotations

import hashlib

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.api.route_doc import Param
from app.calls.service import Creation
from app.calls.start import CreateCall, create_and_dial, refuse_if_not_taking_calls
from app.errors import InvalidInput
from app.schemas.media import Medium
from app.services import Services

IDEMPOTENCY_HEADER = "idempotency-key"
MAX_IDEMPOTENCY_KEY = 255

#: What creating any call can answer beyond a bad body (agents' and `POST /api/calls`).
CALL_CREATION_ERRORS = (
    (400, "invalid_idempotency_key"),
    (400, "unsupported_medium"),
    (400, "telephony_config_incomplete"),
    (400, "provider_rejected"),
    (409, "idempotency_key_reused"),
    (429, "too_many_calls"),
    (429, "provider_rate_limited"),
    (502, "provider_unavailable"),
    (503, "draining"),
    (503, "cluster_unavailable"),
)
IDEMPOTENCY = Param(
    "Idempotency-Key",
    "Replaying a key answers the call it created (with `Idempotent-Replayed: true`).",
    location="header",
)


async def start_call(
    request: Request,
    services: Services,
    medium: Medium | None,
    agent_id: str | None,
    create: CreateCall,
) -> Response:
    """Create the call (or find the one this Idempotency-Key made) and dial it when it is outgoing.

    201 with the call; a replayed key answers the same call with `Idempotent-Replayed: true`.
    """
    refuse_if_not_taking_calls(services)  # before the key is checked or the body read
    key = idempotency_key(request)
    creation = Creation(idempotency_key=key, fingerprint=await fingerprint(request) if key else None)
    row, created = await create_and_dial(services, medium, agent_id, create, creation)
    headers = {} if created else {"Idempotent-Replayed": "true"}
    return JSONResponse(services.calls.to_schema(row).to_json(), status_code=201, headers=headers)


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise InvalidInput(
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} printable characters (a UUID is ideal)",
        )
    return key


async def fingerprint(request: Request) -> str:
    """What the request asked for: a reused key must come with the same path and body."""
    digest = hashlib.sha256(request.url.path.encode() + b"\n" + await request.body())
    return digest.hexdigest()
