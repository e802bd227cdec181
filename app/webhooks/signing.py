"""How callbridge signs what it POSTs to the user's servers (ARCHITECTURE §3.2).

`X-Callbridge-Webhook-Timestamp` is Unix seconds; `X-Callbridge-Webhook-Signature` is the hex HMAC-SHA256
of the body followed by that timestamp, one per secret, comma-separated (several during a rotation): a
receiver accepts the request when any one matches a secret it knows.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

SIGNATURE_HEADER = "X-Callbridge-Webhook-Signature"
TIMESTAMP_HEADER = "X-Callbridge-Webhook-Timestamp"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of `body` + `timestamp` with `secret`."""
    return hmac.new(secret.encode(), body + timestamp.encode(), hashlib.sha256).hexdigest()


def signed_headers(secrets: Sequence[str], body: bytes, timestamp: str | None = None) -> dict[str, str]:
    """The timestamp and signature headers for `body` (none without secrets); `timestamp` defaults to now."""
    if not secrets:
        return {}
    timestamp = timestamp or str(int(time.time()))
    return {
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: ",".join(signature(secret, timestamp, body) for secret in secrets),
    }
