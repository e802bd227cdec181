"""Checking, from SIPp's message log, the digest credentials a UAC sent (RFC 2617 / 7616: MD5 and
SHA-256, with or without qop=auth), for challenges SIPp's verifyauth cannot check (Proxy-Authorization)."""

from __future__ import annotations

import hashlib
import re

_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')
_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def sent_credentials(messages: str, header: str = "Proxy-Authorization") -> dict[str, str] | None:
    """The parameters of the last `header: Digest ...` line in a SIPp message log, or None."""
    lines = re.findall(rf"^{re.escape(header)}:\s*Digest\s+(.*)$", messages, re.IGNORECASE | re.MULTILINE)
    if not lines:
        return None
    return {name.lower(): quoted or bare for name, quoted, bare in _PARAM.findall(lines[-1])}


def digest_is_valid(credentials: dict[str, str], method: str, password: str) -> bool:
    """Whether `response` is the digest of `password` for this request (algorithm from the credentials)."""
    hash_name = credentials.get("algorithm", "MD5").upper()
    if hash_name not in _HASHES:
        return False

    def h(text: str) -> str:
        return _HASHES[hash_name](text.encode()).hexdigest()

    ha1 = h(f"{credentials['username']}:{credentials['realm']}:{password}")
    ha2 = h(f"{method}:{credentials['uri']}")
    if credentials.get("qop"):
        parts = (credentials["nonce"], credentials["nc"], credentials["cnonce"], credentials["qop"])
        expected = h(f"{ha1}:{':'.join(parts)}:{ha2}")
    else:
        expected = h(f"{ha1}:{credentials['nonce']}:{ha2}")
    return credentials.get("response", "").lower() == expected
