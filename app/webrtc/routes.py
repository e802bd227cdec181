"""A webRtc call's joinUrl, a WHIP endpoint (RFC 9725), and its session URL.

`POST /calls/{callId}/webrtc/{token}` with the client's complete SDP offer (`application/sdp`) answers
`201` with the SDP answer and `Location: …/session`; `DELETE` on that URL hangs the call up. No API key: the
token in the path is the credential, as for media streams. A refused offer is answered in the API's error
shape and recorded on the call (`join_refused`) when the credential is right; the call itself is left as
it was, so the client may post a better offer before the call's joinTimeout.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from app.api.route_doc import DocRoute, RouteDoc
from app.api.streams import end_unopenable
from app.calls.session import CallSession
from app.errors import CallNotActive, Conflict, Forbidden, NotFound, ServiceError
from app.metrics import STREAM_JOINS_REFUSED
from app.schemas.calls import EndReason, EventSeverity
from app.services import Services, services_of
from app.store.secret_box import SecretDecryptionError
from app.store.tables import CallRow
from app.webrtc.offer import CLIENT_HUNG_UP, SDP_MEDIA_TYPE, Offer, check_offer

log = logging.getLogger(__name__)

JOIN_PATH = "/calls/{call_id}/webrtc/{token}"
SESSION_PATH = JOIN_PATH + "/session"


async def _call_of(services: Services, request: Request) -> CallRow:
    """The call the path names, once its token checks out (403 before anything else, 404 unknown)."""
    call_id = request.path_params["call_id"]
    if not services.calls.tokens.check(call_id, request.path_params["token"]):
        raise Forbidden("invalid_credential", "this URL's token is not the call's credential")
    call = await services.calls_repo.get(call_id)
    if call is None:
        raise NotFound("call_not_found", f"no call with id {call_id}")
    return call


def _check_joinable(services: Services, call: CallRow) -> None:
    if call.medium_kind != "webRtc":
        raise Conflict("wrong_medium", f"call {call.id} has medium {call.medium_kind}, not webRtc")
    if call.ended is not None:
        raise CallNotActive("call_not_active", f"call {call.id} has ended")
    if call.joined is not None or services.sessions.get(call.id) is not None:
        raise Conflict("already_joined", f"call {call.id} is joined already: an offer was answered")


async def join(request: Request) -> Response:
    services = services_of(request)
    call = await _call_of(services, request)
    try:
        _check_joinable(services, call)
        offer = check_offer(request.headers.get("content-type"), await request.body())
        return await _answer(services, call, offer)
    except ServiceError as exc:
        STREAM_JOINS_REFUSED.labels(exc.code).inc()
        log.info("refused the WebRTC offer for call %s: %s", call.id, exc.detail)
        if exc.code != "wrong_medium":
            services.calls.events.record(
                call.id,
                call.created,
                "join_refused",
                f"WebRTC offer refused: {exc.detail}",
                EventSeverity.WARNING,
                {"code": exc.code, "status": exc.status},
            )
        raise


async def _answer(services: Services, call: CallRow, offer: Offer) -> Response:
    try:
        pipeline = services.build_pipeline(call)
    except SecretDecryptionError:
        await end_unopenable(services, call)
        raise CallNotActive("call_not_active", "the call's agent cannot be started on this server") from None
    from app.webrtc.peer import answer_offer  # aiortc loads with the first webRtc call, not at start-up

    services.webrtc.ready()
    transport, answer = await answer_offer(offer, services.settings.rtp_timeout)
    session = CallSession(call, transport, pipeline, services.calls, services.session_settings, services.legs)
    if not services.sessions.claim(call.id, session):
        await transport.close()
        raise Conflict("already_joined", f"call {call.id} is joined already: an offer was answered")
    services.webrtc.run(session, lambda: services.sessions.release(call.id, session))
    location = f"{services.calls.webrtc_join_url(call.id)}/session"
    return Response(answer, status_code=201, media_type=SDP_MEDIA_TYPE, headers={"Location": location})


async def hang_up(request: Request) -> Response:
    services = services_of(request)
    call = await _call_of(services, request)
    session = services.sessions.get(call.id)
    text = f"{CLIENT_HUNG_UP} (DELETE on the WHIP session)"
    if session is not None and session.actions is not None:  # joined here: its session ends the call
        session.far_end_left(text)
        return Response(status_code=204)
    # Still connecting (the session does not own the call yet), or held by another instance: the call
    # ends now all the same.
    if call.ended is None:
        await services.calls.end(call, EndReason.HANGUP, text)
    if session is not None:
        session.finish(EndReason.HANGUP, text)
    return Response(status_code=204)


ROUTES = [
    DocRoute(
        JOIN_PATH,
        join,
        methods=["POST"],
        doc=RouteDoc(
            "Join a webRtc call (WHIP, its joinUrl)",
            "provider-facing",
            "The joinUrl of a call with medium `webRtc`: a WHIP endpoint (RFC 9725). POST the client's "
            "complete SDP offer (ICE gathering finished: no trickle) with an Opus audio section; the answer "
            "comes back as `application/sdp` with `Location`, the session URL whose DELETE hangs up. No API "
            "key: the token in the path is the credential. A refused offer is recorded on the call "
            "(`join_refused`) and the call waits for another until its joinTimeout.",
            body={"type": "string", "description": "The SDP offer"},
            body_media_type=SDP_MEDIA_TYPE,
            response={"type": "string", "description": "The SDP answer"},
            media_type=SDP_MEDIA_TYPE,
            status=201,
            errors=(
                (400, "invalid_offer"),
                (400, "no_opus_audio"),
                (400, "no_ice_candidates"),
                (403, "invalid_credential"),
                (404, "call_not_found"),
                (409, "already_joined"),
                (409, "wrong_medium"),
                (415, "not_sdp"),
                (422, "call_not_active"),
            ),
        ),
    ),
    DocRoute(
        SESSION_PATH,
        hang_up,
        methods=["DELETE"],
        doc=RouteDoc(
            "Hang up a webRtc call (its WHIP session URL)",
            "provider-facing",
            "The `Location` a WHIP offer was answered with: DELETE ends the call (`hangup`). No API key: the "
            "token in the path is the credential.",
            status=204,
            errors=((403, "invalid_credential"), (404, "call_not_found")),
        ),
    ),
]
