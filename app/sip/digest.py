"""SIP digest authentication, client side (RFC 3261 §22, RFC 7616 hashing, RFC 8760 algorithms)."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from app.sip.message import SipRequest, SipResponse, next_attempt

__all__ = [
    "ALGORITHMS",
    "DigestChallenge",
    "DigestClient",
    "DigestError",
    "authorize",
    "parse_challenge",
]


class DigestError(ValueError):
    """A challenge we cannot parse or answer."""


# Algorithm name (canonical spelling) → hashlib name; "-sess" variants share their base's hash.
ALGORITHMS: dict[str, str] = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}
_CANONICAL_ALGORITHMS = {name.casefold(): name for base in ALGORITHMS for name in (base, f"{base}-sess")}
_QOPS = ("auth", "auth-int")
_PARAM = re.compile(r'\s*([A-Za-z0-9_\-.!%*+`\'~]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|$)', re.S)
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)


@dataclass
class DigestChallenge:
    """One Digest challenge from WWW-Authenticate or Proxy-Authenticate."""

    realm: str
    nonce: str
    algorithm: str = "MD5"  # canonical spelling when known ("MD5", "SHA-256", "MD5-sess"...), else as sent
    qop: list[str] = field(default_factory=list)  # lower-cased options, e.g. ["auth", "auth-int"]
    opaque: str | None = None
    stale: bool = False

    @property
    def supported(self) -> bool:
        """Whether DigestClient can answer it (known algorithm, and a qop we do if any is required)."""
        known_qop = not self.qop or any(option in _QOPS for option in self.qop)
        return self.algorithm in _CANONICAL_ALGORITHMS.values() and known_qop


def parse_challenge(header_value: str) -> DigestChallenge:
    """Parse `Digest realm="...", nonce="...", ...` (names case-insensitive, values quoted or not)."""
    scheme, _, rest = header_value.strip().partition(" ")
    if scheme.casefold() != "digest":
        raise DigestError(f"not a Digest challenge: {scheme[:20]!r}")
    params = _parse_params(rest)
    if "realm" not in params or "nonce" not in params:
        raise DigestError("Digest challenge without realm or nonce")
    algorithm = params.get("algorithm") or "MD5"
    qop = [option.strip().lower() for option in params.get("qop", "").split(",") if option.strip()]
    return DigestChallenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=_CANONICAL_ALGORITHMS.get(algorithm.casefold(), algorithm),
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").casefold() == "true",
    )


def _parse_params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    position = 0
    text = text.strip()
    while position < len(text):
        match = _PARAM.match(text, position)
        if match is None or match.end() == position:
            raise DigestError(f"malformed Digest parameters near {text[position : position + 30]!r}")
        quoted, bare = match.group(2), match.group(3)
        value = _QUOTED_PAIR.sub(r"\1", quoted) if quoted is not None else bare
        params.setdefault(match.group(1).lower(), value)
        position = match.end()
    return params


def _choose_qop(offered: list[str]) -> str | None:
    """'auth' when offered, else 'auth-int' when offered (the only option we know), else None (no qop:
    the RFC 2069 response)."""
    return next((qop for qop in _QOPS if qop in offered), None)


class DigestClient:
    """Answers challenges with one set of credentials; counts nc per nonce."""

    def __init__(
        self, username: str, password: str, *, cnonce_factory: Callable[[], str] | None = None
    ) -> None:
        self.username = username
        self._password = password
        self._new_cnonce = cnonce_factory or (lambda: secrets.token_hex(8))
        self._nonce_counts: dict[str, int] = {}

    def authorization(self, challenge: DigestChallenge, method: str, uri: str, body: bytes = b"") -> str:
        """The Authorization / Proxy-Authorization value answering `challenge`; DigestError if unsupported."""
        if not challenge.supported:
            raise DigestError(f"unsupported Digest challenge (algorithm {challenge.algorithm!r})")
        base, _, sess = challenge.algorithm.partition("-sess")
        hash_name = ALGORITHMS[base]

        def h(data: str | bytes) -> str:
            raw = data.encode() if isinstance(data, str) else data
            # Digest hashes are a protocol requirement, not our security choice: allowed on FIPS builds too.
            return hashlib.new(hash_name, raw, usedforsecurity=False).hexdigest()

        qop = _choose_qop(challenge.qop)
        cnonce = self._new_cnonce() if qop or sess else None
        ha1 = h(f"{self.username}:{challenge.realm}:{self._password}")
        if challenge.algorithm.endswith("-sess"):
            ha1 = h(f"{ha1}:{challenge.nonce}:{cnonce}")
        ha2 = h(f"{method}:{uri}:{h(body)}" if qop == "auth-int" else f"{method}:{uri}")
        fields = [
            ("username", _quote(self.username)),
            ("realm", _quote(challenge.realm)),
            ("nonce", _quote(challenge.nonce)),
            ("uri", _quote(uri)),
        ]
        if qop:
            nc = f"{self._next_count(challenge.nonce):08x}"
            response = h(f"{ha1}:{challenge.nonce}:{nc}:{cnonce}:{qop}:{ha2}")
        else:
            response = h(f"{ha1}:{challenge.nonce}:{ha2}")
        fields += [("response", _quote(response)), ("algorithm", challenge.algorithm)]
        if cnonce is not None:
            fields.append(("cnonce", _quote(cnonce)))
        if challenge.opaque is not None:
            fields.append(("opaque", _quote(challenge.opaque)))
        if qop:
            fields += [("qop", qop), ("nc", nc)]
        return "Digest " + ", ".join(f"{name}={value}" for name, value in fields)

    def _next_count(self, nonce: str) -> int:
        count = self._nonce_counts.get(nonce, 0) + 1
        self._nonce_counts[nonce] = count
        return count


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_HEADERS = {401: ("WWW-Authenticate", "Authorization"), 407: ("Proxy-Authenticate", "Proxy-Authorization")}


def authorize(request: SipRequest, response: SipResponse, client: DigestClient) -> SipRequest | None:
    """The request again with credentials for a 401/407: CSeq+1, a new Via branch, same Call-ID, From tag
    and body. Per realm, the topmost challenge we support (RFC 8760 §2.4) is answered.

    None when it cannot be answered: not a 401/407, no supported challenge, or the request already
    carried our credentials for that realm and the challenge is not stale (the password is wrong; answering
    again would loop)."""
    names = _HEADERS.get(response.status)
    if names is None:
        return None
    challenge_name, credentials_name = names
    chosen: dict[str, DigestChallenge] = {}
    for value in response.headers.get_all(challenge_name):
        try:
            challenge = parse_challenge(value)
        except DigestError:
            continue  # another scheme, or garbage: skip it like RFC 2617 §3.2.1 says
        if challenge.supported and challenge.realm not in chosen:
            chosen[challenge.realm] = challenge
    if not chosen:
        return None
    previous = _credential_realms(request, credentials_name)
    if any(realm in previous and not challenge.stale for realm, challenge in chosen.items()):
        return None
    headers = request.headers.copy()
    kept = [value for value in headers.get_all(credentials_name) if _realm_of(value) not in chosen]
    headers.remove(credentials_name)
    for value in kept:
        headers.add(credentials_name, value)
    uri = str(request.uri)
    for challenge in chosen.values():
        headers.add(credentials_name, client.authorization(challenge, request.method, uri, request.body))
    return next_attempt(request, headers)


def _credential_realms(request: SipRequest, name: str) -> set[str]:
    return {realm for value in request.headers.get_all(name) if (realm := _realm_of(value)) is not None}


def _realm_of(credentials: str) -> str | None:
    scheme, _, rest = credentials.strip().partition(" ")
    if scheme.casefold() != "digest":
        return None
    try:
        return _parse_params(rest).get("realm")
    except DigestError:
        return None
