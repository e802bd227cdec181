"""Per-call join credentials: an HMAC of the call id, carried as a joinUrl path segment.

A path segment survives Twilio dropping query strings from `<Stream url>`. Being derived, not stored, any
instance sharing CALLBRIDGE_SECRET_KEY can check it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from app.store.secret_box import derive_key


class JoinTokens:
    def __init__(self, master_secret: str) -> None:
        self._key = derive_key(master_secret, "join-tokens")

    def token_for(self, call_id: str) -> str:
        digest = hmac.new(self._key, call_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).decode()

    def check(self, call_id: str, token: str) -> bool:
        """Whether `token` is call `call_id`'s credential; anything malformed (e.g. not ASCII) is not."""
        return hmac.compare_digest(self.token_for(call_id).encode(), token.encode("utf-8", "replace"))
