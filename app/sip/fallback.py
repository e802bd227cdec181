"""The SIP fallback handler: an INVITE no route matches is described to the user's server, which decides.

The description is POSTed as JSON, signed like every callbridge webhook (app.webhooks.signing); the
answer (app.schemas.sip_fallback) is a `FallbackDecision`. A handler that answers late (after
`timeout_s`), not at all, with a non-2xx, or with anything but one well-formed answer raises
`FallbackFailed` with a reason fit for a 480's reason phrase and a log line.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
from pydantic import ValidationError

from app.api.errors import describe_validation_error
from app.schemas.calls import StartCallRequest
from app.schemas.sip import FallbackHandler
from app.schemas.sip_fallback import FallbackAnswer, RejectCall, StartAgentCall
from app.sip.message import SipRequest
from app.sip.transport import Peer
from app.webhooks.signing import signed_headers

#: How long the handler has to answer (ARCHITECTURE §3.1: a slow handler is a 480, never a hung INVITE).
TIMEOUT_S = 3.0
#: The most of an answer that is read.
MAX_ANSWER_BYTES = 256 * 1024
EVENT = "sip.unmatched_invite"

FallbackDecision = StartAgentCall | StartCallRequest | RejectCall


class FallbackFailed(Exception):
    """The handler gave no usable decision (why, in one line)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def describe_invite(request: SipRequest, peer: Peer) -> dict[str, Any]:
    """The JSON the handler is sent about `request`, which arrived from `peer`."""
    from_ = request.from_
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        if name.lower().startswith("x-"):
            headers.setdefault(name, value)
    return {
        "event": EVENT,
        "invite": {
            "sipCallId": request.call_id,
            "requestUri": str(request.uri),
            "callee": request.uri.user,
            "caller": from_.uri.user,
            "fromUri": str(from_.uri),
            "fromDisplayName": from_.display_name,
            "toUri": str(request.to.uri),
            "source": {"transport": peer.transport, "host": peer.host, "port": peer.port},
            "headers": headers,
        },
    }


async def ask_handler(
    http: httpx.AsyncClient,
    handler: FallbackHandler,
    request: SipRequest,
    peer: Peer,
    timeout_s: float = TIMEOUT_S,
) -> FallbackDecision:
    """POST `request`'s description to the handler; its decision, or FallbackFailed."""
    body = orjson.dumps(describe_invite(request, peer))
    headers = {"content-type": "application/json", **signed_headers(handler.secrets, body)}
    try:
        async with asyncio.timeout(timeout_s):
            response = await http.post(handler.url, content=body, headers=headers, timeout=timeout_s)
    except TimeoutError:
        raise FallbackFailed(f"the fallback handler did not answer within {timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        raise FallbackFailed(f"the fallback handler could not be reached ({type(exc).__name__})") from None
    if not 200 <= response.status_code < 300:
        raise FallbackFailed(f"the fallback handler answered HTTP {response.status_code}")
    return parse_answer(response.content)


def parse_answer(content: bytes) -> FallbackDecision:
    """The decision in a handler's 2xx body; FallbackFailed saying what is wrong with it."""
    if len(content) > MAX_ANSWER_BYTES:
        raise FallbackFailed(f"the fallback handler's answer is over {MAX_ANSWER_BYTES} bytes")
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise FallbackFailed("the fallback handler's answer is not JSON") from None
    try:
        answer = FallbackAnswer.model_validate(data)
    except ValidationError as exc:
        reason = f"the fallback handler's answer is unusable: {describe_validation_error(exc)}"
        raise FallbackFailed(reason) from None
    decision = answer.start_agent_call or answer.start_call or answer.reject
    assert decision is not None  # the model holds exactly one
    return decision
