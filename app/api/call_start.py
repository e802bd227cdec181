"""Creating a call from the API: idempotency, the concurrency limit, drains, dialling `outgoing` media."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.calls.service import Creation
from app.errors import InvalidInput, Unavailable
from app.schemas.media import Medium
from app.services import Services
from app.sip.outgoing import SipDialPlan
from app.store.tables import CallRow

#: What a client refused during a drain is told to wait (another instance, or this one restarted).
DRAIN_RETRY_AFTER_S = 5

IDEMPOTENCY_HEADER = "idempotency-key"
MAX_IDEMPOTENCY_KEY = 255


async def start_call(
    request: Request,
    services: Services,
    medium: Medium | None,
    agent_id: str | None,
    create: Callable[[Creation], Awaitable[tuple[CallRow, bool]]],
) -> Response:
    """Create the call (or find the one this Idempotency-Key made) and dial it when it is outgoing.

    201 with the call; a replayed key answers the same call with `Idempotent-Replayed: true`.
    """
    if services.draining:
        raise Unavailable(
            "draining",
            "callbridge is shutting down and takes no new calls; try again shortly",
            retry_after_s=DRAIN_RETRY_AFTER_S,
        )
    sip_plan = _sip_plan(services, medium)
    plan = None if sip_plan else await services.legs.plan_dial(medium, agent_id)
    key = idempotency_key(request)
    creation = Creation(
        dial_stream_options=plan.control.provider.stream_options(plan.control.config) if plan else None,
        dial_stream_signed=bool(plan and plan.control.provider.signs_streams),
        idempotency_key=key,
        fingerprint=await fingerprint(request) if key else None,
    )
    row, created = await create(creation)
    if created and plan is not None:
        row = await services.legs.dial(row, plan)
    elif created and sip_plan is not None and services.sip is not None:
        row = await services.sip.dialer.dial(row, sip_plan)
    headers = {} if created else {"Idempotent-Replayed": "true"}
    return JSONResponse(services.calls.to_schema(row).to_json(), status_code=201, headers=headers)


def _sip_plan(services: Services, medium: Medium | None) -> SipDialPlan | None:
    """The SIP dial a `sip` medium asks for (None for other media); 400 when SIP is off or it is unusable."""
    if medium is None or medium.kind != "sip":
        return None
    if services.sip is None:
        raise InvalidInput(
            "sip_disabled", "SIP is not enabled on this server: set CALLBRIDGE_SIP_LISTEN (or serve --sip)"
        )
    return services.sip.dialer.plan(medium)


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
