"""The batch webhook: a call callbridge cannot dial itself is created and handed to the user's server.

`{"event": "call.started", "call": {...}}` is POSTed to the batch's `webhookUrl`, which connects the call
(through its joinUrl). As with Ultravox it is not retried: a failed delivery ends the call and marks the
scheduled call ERROR. With a `webhookSecret`, the request is signed: `X-Callbridge-Webhook-Timestamp` (Unix
seconds) and `X-Callbridge-Webhook-Signature` (app.webhooks.signing).
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from app.webhooks.signing import signed_headers

TIMEOUT_S = 10.0


class WebhookFailed(Exception):
    """The user's server did not take the call (why, in one line)."""


async def deliver_call_started(
    http: httpx.AsyncClient, url: str, secret: str | None, call: dict[str, Any]
) -> None:
    """POST the call to the batch's webhook; WebhookFailed unless it answers 2xx within TIMEOUT_S."""
    body = orjson.dumps({"event": "call.started", "call": call})
    headers = {"content-type": "application/json", **signed_headers([secret] if secret else [], body)}
    try:
        response = await http.post(url, content=body, headers=headers, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise WebhookFailed(f"the batch webhook could not be reached: {type(exc).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise WebhookFailed(f"the batch webhook answered {response.status_code}")
