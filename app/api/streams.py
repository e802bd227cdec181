"""The joinUrl WebSocket: `/calls/{callId}/stream/{token}`, where the provider's media stream lands.

A join is refused (HTTP 403 on the upgrade, nothing else touched) when the credential is wrong, the call is
unknown, already joined or ended, or, for calls created from a signed webhook, the provider's handshake
signature does not verify.
"""

from __future__ import annotations

import logging

from starlette.websockets import WebSocket

from app.api.route_doc import DocWebSocketRoute, RouteDoc
from app.api.websocket_transport import WebSocketMessages
from app.calls.framed_stream import FramedStream
from app.calls.session import CallSession
from app.metrics import STREAM_JOINS_REFUSED
from app.providers import get_provider
from app.providers.base import WebhookProvider
from app.schemas.calls import EndReason, EventSeverity
from app.services import Services, services_of
from app.store.secret_box import SecretDecryptionError
from app.store.tables import CallRow

log = logging.getLogger(__name__)


async def refuse(websocket: WebSocket, reason: str, call_id: str) -> None:
    STREAM_JOINS_REFUSED.labels(reason).inc()
    log.info("refused stream join for call %s: %s", call_id, reason)
    await websocket.close(code=1008)


async def _join_problem(
    services: Services, websocket: WebSocket, call_id: str
) -> tuple[str | None, CallRow | None]:
    """(reason the join is refused, or None; the call)."""
    if not services.calls.tokens.check(call_id, websocket.path_params["token"]):
        return "bad_credential", None
    call = await services.calls_repo.get(call_id)
    if call is None:
        return "unknown_call", None
    if call.ended is not None:
        return "call_ended", call
    if call.joined is not None or services.sessions.get(call_id) is not None:
        return "already_joined", call
    if call.stream_signature_required:
        provider = get_provider(call.medium_kind)
        if not isinstance(provider, WebhookProvider):
            return "no_credentials", call
        config = await services.telephony_configs.load(provider.name, provider.config_model)
        if config is None:
            return "no_credentials", call
        headers = {k.lower(): v for k, v in websocket.headers.items()}
        if not provider.verify_stream(services.calls.join_url(call_id), headers, config):
            return "bad_signature", call
    return None, call


async def call_stream(websocket: WebSocket) -> None:
    services = services_of(websocket)
    call_id = websocket.path_params["call_id"]
    problem, call = await _join_problem(services, websocket, call_id)
    provider = get_provider(call.medium_kind) if call else None
    if problem is not None or call is None or provider is None:
        await refuse(websocket, problem or "unsupported_medium", call_id)
        return
    # The medium's own options and those stored with the call win over the URL's query (where Exotel's
    # `sample-rate` arrives).
    definition = call.definition
    options = {
        **websocket.query_params,
        **definition.medium_options(call.medium_kind),
        **definition.stream_options,
    }
    try:
        pipeline = services.build_pipeline(call)
    except SecretDecryptionError:
        await end_unopenable(services, call)
        await refuse(websocket, "pipeline_secrets", call_id)
        return
    socket = WebSocketMessages(websocket, services.settings.stream_message_limit(call.medium_kind))
    transport = FramedStream(socket, provider.new_framing(options))
    session = CallSession(
        call,
        transport,
        pipeline,
        services.calls,
        services.session_settings,
        services.legs,
    )
    if not services.sessions.claim(call_id, session):
        await refuse(websocket, "already_joined", call_id)
        return
    try:
        await websocket.accept()
        await session.run()
    finally:
        services.sessions.release(call_id, session)


async def end_unopenable(services: Services, call: CallRow) -> None:
    """A call whose pipeline secrets this server cannot decrypt (another CALLBRIDGE_SECRET_KEY) cannot run."""
    text = "the agent's secrets cannot be decrypted with this server's CALLBRIDGE_SECRET_KEY"
    log.error("call %s: %s", call.id, text)
    services.calls.events.record(call.id, call.created, "pipeline_error", text, EventSeverity.ERROR)
    await services.calls.end(call, EndReason.SYSTEM_ERROR, text)


STREAM_ROUTE = DocWebSocketRoute(
    "/calls/{call_id}/stream/{token}",
    call_stream,
    doc=RouteDoc(
        "A call's media stream (WebSocket, its joinUrl)",
        "provider-facing",
        "Where the provider's media stream (or a serverWebSocket client) joins the call, speaking the "
        "framing of the call's medium. No API key: the token in the path is the credential, and calls from a "
        "signed webhook also need the provider's handshake signature. A refused join is closed with 1008.",
    ),
)
