"""Credentials taken out of a SIP message's text before it is stored (`sip_logs`).

`Authorization` and `Proxy-Authorization` keep their scheme, username, realm, nonce and uri (what a
digest failure is debugged with) but lose `response` (the digest proof, from which a weak password can be
guessed offline); any other scheme loses its whole credentials. `Authentication-Info` loses `rspauth`.
Challenges (`WWW-Authenticate`, `Proxy-Authenticate`) carry no secret and are kept as they are.
"""

from __future__ import annotations

import re

REDACTED = "[redacted]"
_CREDENTIALS = frozenset({"authorization", "proxy-authorization"})
_PROOF = re.compile(r'(\b(?:response|rspauth)\s*=\s*)("[^"]*"|[^,\s]*)', re.IGNORECASE)


def _without_proof(params: str) -> str:
    return _PROOF.sub(rf'\g<1>"{REDACTED}"', params)


def _redacted_line(line: str) -> str:
    name, colon, value = line.partition(":")
    key = name.strip().lower()
    if not colon:
        return line
    if key in _CREDENTIALS:
        scheme, _, params = value.strip().partition(" ")
        if scheme.lower() == "digest":
            return f"{name}: {scheme} {_without_proof(params)}"
        return f"{name}: {scheme} {REDACTED}"
    if key == "authentication-info":
        return f"{name}:{_without_proof(value)}"
    return line


def redact_credentials(text: str) -> str:
    """`text` (a whole message) with the credentials in its headers replaced by `[redacted]`."""
    head, separator, body = text.partition("\r\n\r\n")
    start, *lines = head.split("\r\n")
    return "\r\n".join([start, *(_redacted_line(line) for line in lines)]) + separator + body
