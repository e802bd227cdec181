"""SIP messages (RFC 3261 §7, §19, §20, §25): URIs, header values, parsing, serializing and TCP framing."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from urllib.parse import quote, unquote

MAX_MESSAGE_BYTES = 65535
MAX_HEADER_COUNT = 200
MAX_HEADER_BYTES = 16384  # the whole header block, start line included

BRANCH_MAGIC = "z9hG4bK"
_MAX_CSEQ = 2**31 - 1  # RFC 3261 §8.1.1.5
_MAX_FORWARDS = 255


class SipParseError(ValueError):
    """The message (or a value in it) is malformed; str(exc) is a human reason fit for a 400."""


class UnsupportedUriScheme(SipParseError):
    """A URI with a scheme other than sip:, sips: or tel: (a UA answers 416 to such a Request-URI)."""


# --- character classes (RFC 3261 §25.1), compiled once ---------------------------------------------

_TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
_TOKEN = re.compile(f"[{_TOKEN_CHARS}]+")
_HOST = re.compile(r"[A-Za-z0-9_\-.]+|\[[0-9A-Fa-f:.]+\]")
# user = 1*( unreserved / escaped / user-unreserved ); password adds ":" ... but never "@"
_USER = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+")
_PASSWORD = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*")
_PARAM_CHARS = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+")
_HEADER_CHARS = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|%[0-9A-Fa-f]{2})*")
_TEL_NUMBER = re.compile(r"(?:[0-9A-Fa-f*#+\-.()pPwW]|%[0-9A-Fa-f]{2})+")
_WHITESPACE = re.compile(r"\s")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.S)
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)
_UNQUOTED_DISPLAY = re.compile(f"[{_TOKEN_CHARS} \t]*")
_VIA = re.compile(
    rf"([{_TOKEN_CHARS}]+)[ \t]*/[ \t]*([{_TOKEN_CHARS}]+)[ \t]*/[ \t]*([{_TOKEN_CHARS}]+)[ \t]+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_\-.]+)(?:[ \t]*:[ \t]*([0-9]{1,5}))?[ \t]*(.*)",
    re.S,
)
_CSEQ = re.compile(rf"([0-9]+)[ \t]+([{_TOKEN_CHARS}]+)")
_DIGITS = re.compile(r"[0-9]{1,10}")

_USER_SAFE = "-_.!~*'()&=+$,;?/"
_PASSWORD_SAFE = "-_.!~*'()&=+$,"
_HEADER_SAFE = "-_.!~*'()[]/?:+$"
_PARAM_SAFE = "-_.!~*'()[]/:&+$"


def _param_items(params: dict[str, str | None]) -> str:
    return "".join(f";{name}" if value is None else f";{name}={value}" for name, value in params.items())


def _uri_param_items(params: dict[str, str | None]) -> str:
    # URI params are stored decoded (unlike header params, which may be quoted strings): re-encode them
    return "".join(
        f";{quote(name, safe=_PARAM_SAFE)}"
        if value is None
        else f";{quote(name, safe=_PARAM_SAFE)}={quote(value, safe=_PARAM_SAFE)}"
        for name, value in params.items()
    )


def _parse_params(text: str, what: str) -> dict[str, str | None]:
    """`;a=b;c` (SEMI and EQUAL allow whitespace, values may be quoted strings) → {"a": "b", "c": None}."""
    params: dict[str, str | None] = {}
    if not text:
        return params
    parts = _split_outside_quotes(text, ";") if '"' in text else text.split(";")
    if parts[0].strip():
        raise SipParseError(f"unexpected text {parts[0].strip()!r} in {what}")
    for part in parts[1:]:
        name, eq, value = part.partition("=")
        name = name.strip()
        if not _TOKEN.fullmatch(name):
            raise SipParseError(f"empty or invalid parameter name {name!r} in {what}")
        if eq:
            value = value.strip()
            if not value:
                raise SipParseError(f"parameter {name!r} has an empty value in {what}")
            if value[0] == '"' and not _QUOTED.fullmatch(value):
                raise SipParseError(f"unterminated quoted string in parameter {name!r} of {what}")
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


def _split_outside_quotes(text: str, sep: str, *, angles: bool = False) -> list[str]:
    """Split `text` at `sep`, never inside a quoted string (nor inside <...> when `angles`)."""
    parts: list[str] = []
    start = 0
    quoted = angled = False
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif angled:
            angled = ch != ">"
        elif ch == '"':
            quoted = True
        elif angles and ch == "<":
            angled = True
        elif ch == sep:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if quoted:
        raise SipParseError("unterminated quoted string")
    parts.append(text[start:])
    return parts


def split_header_list(value: str) -> list[str]:
    """Split a comma-separated header value, never inside a quoted string or <...>; empty elements dropped."""
    if "," not in value:
        value = value.strip()
        return [value] if value else []
    if '"' not in value and "<" not in value:
        return [part for part in (p.strip() for p in value.split(",")) if part]
    parts = _split_outside_quotes(value, ",", angles=True)
    return [part for part in (p.strip() for p in parts) if part]


# --- URIs (RFC 3261 §19.1, RFC 3966 tel: as the only other scheme) ---------------------------------


@dataclass
class SipUri:
    """A sip:/sips: URI (or tel:, whose number is `user` and whose host is empty)."""

    scheme: str
    user: str | None
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    password: str | None = None

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{quote(self.user or '', safe=_USER_SAFE)}{_uri_param_items(self.params)}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(quote(self.user, safe=_USER_SAFE))
            if self.password is not None:
                out += [":", quote(self.password, safe=_PASSWORD_SAFE)]
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out += [":", str(self.port)]
        out.append(_uri_param_items(self.params))
        if self.headers:
            out.append("?")
            out.append(
                "&".join(
                    f"{quote(name, safe=_HEADER_SAFE)}={quote(value, safe=_HEADER_SAFE)}"
                    for name, value in self.headers.items()
                )
            )
        return "".join(out)

    @property
    def transport(self) -> str:
        """The transport this URI asks for: "tls" for sips:, else the transport param (default "udp")."""
        if self.scheme == "sips":
            return "tls"
        value = self.params.get("transport")
        return value.lower() if value else "udp"

    @property
    def host_port(self) -> str:
        """`host` or `host:port`, as in a Via sent-by."""
        return self.host if self.port is None else f"{self.host}:{self.port}"


def _parse_port(text: str, what: str) -> int:
    if not _DIGITS.fullmatch(text) or int(text) > 65535:
        raise SipParseError(f"invalid port {text!r} in {what}")
    return int(text)


def _parse_host_port(text: str, what: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"unterminated IPv6 reference in {what}")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise SipParseError(f"unexpected {rest!r} after the host in {what}")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_ = text.partition(":")
        port_text = port_text_ if colon else None
    if not _HOST.fullmatch(host):
        raise SipParseError(f"invalid host {host!r} in {what}")
    port = _parse_port(port_text, what) if port_text is not None else None
    return host.lower(), port


def parse_uri(text: str) -> SipUri:
    """Parse a sip:, sips: or tel: URI (user and header values percent-decoded). Raises SipParseError."""
    scheme, colon, rest = text.partition(":")
    scheme = scheme.lower()
    if not colon or not rest:
        raise SipParseError(f"not a URI: {text!r}")
    if _WHITESPACE.search(text):
        raise SipParseError(f"whitespace inside the URI {text!r}")
    if scheme == "tel":
        return _parse_tel(rest, text)
    if scheme not in ("sip", "sips"):
        if not _SCHEME.fullmatch(scheme):
            raise SipParseError(f"not a URI: {text[:80]!r}")
        raise UnsupportedUriScheme(f"unsupported URI scheme {scheme[:20]!r}")
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user_text, has_password, password_text = userinfo.partition(":")
        if not _USER.fullmatch(user_text):
            raise SipParseError(f"invalid user part {user_text!r} in {text!r}")
        user = unquote(user_text) if "%" in user_text else user_text
        if has_password:
            if not _PASSWORD.fullmatch(password_text):
                raise SipParseError(f"invalid password in {text!r}")
            password = unquote(password_text)
    headers: dict[str, str] = {}
    rest, question, headers_text = rest.partition("?")
    if question:
        for pair in headers_text.split("&"):
            name, eq, value = pair.partition("=")
            if not eq or not name or not _HEADER_CHARS.fullmatch(name) or not _HEADER_CHARS.fullmatch(value):
                raise SipParseError(f"invalid URI header {pair!r} in {text!r}")
            headers[unquote(name)] = unquote(value)
    host_text, semi, params_text = rest.partition(";")
    if not host_text:
        raise SipParseError(f"no host in {text!r}")
    host, port = _parse_host_port(host_text, text)
    params = _parse_uri_params(params_text, text) if semi else {}
    return SipUri(scheme, user, host, port, params, headers, password)


def _parse_uri_params(text: str, uri: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if not name or not _PARAM_CHARS.fullmatch(name) or (eq and not _PARAM_CHARS.fullmatch(value)):
            raise SipParseError(f"invalid URI parameter {part!r} in {uri!r}")
        name = unquote(name).lower() if "%" in name else name.lower()
        params[name] = (unquote(value) if "%" in value else value) if eq else None
    return params


def _parse_tel(rest: str, text: str) -> SipUri:
    number, semi, params_text = rest.partition(";")
    if not _TEL_NUMBER.fullmatch(number):
        raise SipParseError(f"invalid telephone number in {text!r}")
    params = _parse_uri_params(params_text, text) if semi else {}
    return SipUri("tel", unquote(number), "", None, params)


# --- name-addr (From, To, Contact, Route, Record-Route) -------------------------------------------


@dataclass
class NameAddr:
    """A From/To/Contact/Route value: URI, optional display name, header parameters."""

    uri: SipUri
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_tag(self, tag: str) -> NameAddr:
        """A copy carrying `tag` (replacing any tag it had)."""
        return replace(self, params={**self.params, "tag": tag})

    def __str__(self) -> str:
        display = ""
        if self.display_name is not None:
            escaped = self.display_name.replace("\\", "\\\\").replace('"', '\\"')
            display = f'"{escaped}" '
        return f"{display}<{self.uri}>{_param_items(self.params)}"


def parse_name_addr(text: str) -> NameAddr:
    """Parse `"Name" <uri>;params`, `Name <uri>;params` or a bare addr-spec `uri;params`.

    Without <>, the parameters after the URI are header parameters (RFC 3261 §20.10), and the URI may
    then carry neither parameters nor headers.
    """
    text = text.strip()
    display: str | None = None
    if text.startswith('"'):
        match = _QUOTED.match(text)
        if match is None:
            raise SipParseError(f"unterminated quoted display name in {text!r}")
        display = _QUOTED_PAIR.sub(r"\1", match.group(1)) if "\\" in match.group(1) else match.group(1)
        rest = text[match.end() :].lstrip(" \t")
        if not rest.startswith("<"):
            raise SipParseError(f"a quoted display name must be followed by <uri> in {text!r}")
    else:
        lt = text.find("<")
        if lt < 0:
            uri_text, semi, params_text = text.partition(";")
            uri_text = uri_text.rstrip(" \t")
            if "?" in uri_text or "," in uri_text:
                raise SipParseError(f"an address with '?' or ',' must be enclosed in <> in {text!r}")
            return NameAddr(parse_uri(uri_text), None, _parse_params(semi + params_text, text))
        name = text[:lt].strip()
        if name:
            if not _UNQUOTED_DISPLAY.fullmatch(name):
                raise SipParseError(f"display name {name!r} must be quoted")
            display = " ".join(name.split())
        rest = text[lt:]
    end = rest.find(">")
    if end < 0:
        raise SipParseError(f"missing '>' in {text!r}")
    return NameAddr(parse_uri(rest[1:end]), display, _parse_params(rest[end + 1 :], text))


# --- Via (RFC 3261 §20.42) ---------------------------------------------------------------------------


@dataclass
class Via:
    """One Via value."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {self.sent_by}{_param_items(self.params)}"


def parse_via(text: str) -> Via:
    """Parse one Via value (`SIP/2.0/UDP host:port;branch=...`). Raises SipParseError."""
    match = _VIA.fullmatch(text.strip())
    if match is None:
        raise SipParseError(f"malformed Via {text.strip()!r}")
    name, version, transport, host, port_text, rest = match.groups()
    if name.upper() != "SIP" or version != "2.0":
        raise SipParseError(f"unsupported protocol {name}/{version} in Via")
    params = _parse_params(rest, "Via")
    for key in ("received", "maddr", "branch"):
        if key in params and params[key] is None:
            raise SipParseError(f"Via parameter {key} needs a value")
    port = _parse_port(port_text, "Via") if port_text is not None else None
    return Via(transport.upper(), host.lower(), port, params)


# --- headers -------------------------------------------------------------------------------------------

_CANONICAL_NAMES = [
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Accept-Resource-Priority",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Answer-Mode",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Diversion",
    "Error-Info",
    "Event",
    "Expires",
    "Flow-Timer",
    "From",
    "History-Info",
    "Identity",
    "Identity-Info",
    "In-Reply-To",
    "Join",
    "Max-Breadth",
    "Max-Forwards",
    "MIME-Version",
    "Min-Expires",
    "Min-SE",
    "Organization",
    "P-Asserted-Identity",
    "P-Called-Party-ID",
    "P-Charging-Vector",
    "P-Early-Media",
    "P-Preferred-Identity",
    "Path",
    "Priority",
    "Privacy",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Refer-Sub",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Remote-Party-ID",
    "Replaces",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Resource-Priority",
    "Retry-After",
    "Route",
    "RSeq",
    "Security-Client",
    "Security-Server",
    "Security-Verify",
    "Server",
    "Service-Route",
    "Session-Expires",
    "SIP-ETag",
    "SIP-If-Match",
    "Subject",
    "Subscription-State",
    "Supported",
    "Target-Dialog",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "User-to-User",
    "Via",
    "Warning",
    "WWW-Authenticate",
]
_CANONICAL = {name.lower(): name for name in _CANONICAL_NAMES}

# RFC 3261 §7.3.3 plus the compact forms registered since (IANA "Header Fields" registry)
COMPACT_FORMS = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

# Headers whose value is a comma-separated list (RFC 3261 §7.3.1). The authentication headers are not:
# their commas separate parameters of one challenge or credential.
_LIST_HEADERS = frozenset(
    [
        "accept",
        "accept-contact",
        "accept-encoding",
        "accept-language",
        "accept-resource-priority",
        "alert-info",
        "allow",
        "allow-events",
        "call-info",
        "contact",
        "content-encoding",
        "content-language",
        "error-info",
        "history-info",
        "in-reply-to",
        "p-asserted-identity",
        "p-preferred-identity",
        "path",
        "privacy",
        "proxy-require",
        "reason",
        "record-route",
        "reject-contact",
        "request-disposition",
        "require",
        "resource-priority",
        "route",
        "security-client",
        "security-server",
        "security-verify",
        "service-route",
        "supported",
        "unsupported",
        "via",
        "warning",
    ]
)


_KEY_CACHE: dict[str, tuple[str, str]] = {}
_KEY_CACHE_LIMIT = 2048  # names come from the network: bound what a stream of made-up ones can hold


def _header_key(name: str) -> tuple[str, str]:
    """(lookup key, name to write) for a header name as given or received."""
    cached = _KEY_CACHE.get(name)
    if cached is not None:
        return cached
    lower = name.lower()
    if len(lower) == 1:
        lower = COMPACT_FORMS.get(lower, lower)
    canonical = _CANONICAL.get(lower)
    result = (lower, canonical if canonical is not None else name)
    if len(_KEY_CACHE) < _KEY_CACHE_LIMIT and _TOKEN.fullmatch(name):
        _KEY_CACHE[name] = result
    return result


class Headers:
    """Ordered, case-insensitive SIP headers; compact names are stored under their full names."""

    __slots__ = ("_entries",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._entries: list[tuple[str, str, str]] = []  # (key, name, value)
        for name, value in items:
            self.add(name, value)

    def get(self, name: str) -> str | None:
        """The first value; for list headers (Via, Contact, Allow...) the first list element."""
        key = _header_key(name)[0]
        for entry_key, _, value in self._entries:
            if entry_key == key:
                if key in _LIST_HEADERS:
                    elements = split_header_list(value)
                    if elements:
                        return elements[0]
                    continue
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value in order; list headers are split at commas (not inside quotes or <...>)."""
        key = _header_key(name)[0]
        values = [value for entry_key, _, value in self._entries if entry_key == key]
        if key in _LIST_HEADERS:
            return [element for value in values for element in split_header_list(value)]
        return values

    def add(self, name: str, value: str) -> None:
        """Append a header."""
        key, display = _header_key(name)
        self._entries.append((key, display, value))

    def prepend(self, name: str, value: str) -> None:
        """Insert before the existing headers of that name (the top Via), or first if there are none."""
        key, display = _header_key(name)
        for index, entry in enumerate(self._entries):
            if entry[0] == key:
                self._entries.insert(index, (key, display, value))
                return
        self._entries.insert(0, (key, display, value))

    def set(self, name: str, value: str) -> None:
        """Replace every header of that name with one, where the first one was (else appended)."""
        key, display = _header_key(name)
        for index, entry in enumerate(self._entries):
            if entry[0] == key:
                self._entries[index] = (key, display, value)
                self._entries[index + 1 :] = [e for e in self._entries[index + 1 :] if e[0] != key]
                return
        self._entries.append((key, display, value))

    def remove(self, name: str) -> None:
        """Remove every header of that name."""
        key = _header_key(name)[0]
        self._entries = [entry for entry in self._entries if entry[0] != key]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _header_key(name)[0]
        return any(entry[0] == key for entry in self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self.items() == other.items()

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"

    def items(self) -> list[tuple[str, str]]:
        """(name, value) pairs in order, one per header line; names canonical, unknown ones as received."""
        return [(name, value) for _, name, value in self._entries]

    def copy(self) -> Headers:
        clone = Headers()
        clone._entries = list(self._entries)
        return clone


# --- messages -----------------------------------------------------------------------------------------


def _required(headers: Headers, name: str) -> str:
    value = headers.get(name)
    if value is None:
        raise SipParseError(f"missing {name} header")
    return value


def parse_cseq(value: str) -> tuple[int, str]:
    """`CSeq: 12 INVITE` value → (12, "INVITE")."""
    match = _CSEQ.fullmatch(value.strip())
    if match is None:
        raise SipParseError(f"malformed CSeq {value!r}")
    digits = match.group(1)
    number = int(digits) if len(digits) <= 10 else _MAX_CSEQ + 1
    if number > _MAX_CSEQ:
        raise SipParseError(f"CSeq number {digits[:20]} is not below 2**31")
    return number, match.group(2)


class _MessageFields:
    """Typed access to the headers every request and response carries (parsed on each access)."""

    headers: Headers

    @property
    def call_id(self) -> str:
        return _required(self.headers, "Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        return parse_cseq(_required(self.headers, "CSeq"))

    @property
    def from_(self) -> NameAddr:
        return parse_name_addr(_required(self.headers, "From"))

    @property
    def to(self) -> NameAddr:
        return parse_name_addr(_required(self.headers, "To"))

    @property
    def vias(self) -> list[Via]:
        return [parse_via(value) for value in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via:
        return parse_via(_required(self.headers, "Via"))

    @property
    def contact(self) -> NameAddr | None:
        value = self.headers.get("Contact")
        if value is None or value.strip() == "*":
            return None
        return parse_name_addr(value)

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("Content-Type")
        if value is None:
            return None
        return value.partition(";")[0].strip().lower() or None


@dataclass(eq=False)
class SipRequest(_MessageFields):
    method: str
    uri: SipUri
    headers: Headers
    body: bytes = b""


@dataclass(eq=False)
class SipResponse(_MessageFields):
    status: int
    reason: str
    headers: Headers
    body: bytes = b""


SipMessage = SipRequest | SipResponse

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    428: "Use Identity Header",
    429: "Provide Referrer Identity",
    430: "Flow Failed",
    433: "Anonymity Disallowed",
    436: "Bad Identity-Info",
    437: "Unsupported Certificate",
    438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support",
    440: "Max-Breadth Exceeded",
    469: "Bad Info Package",
    470: "Consent Needed",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    555: "Push Notification Service Not Supported",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",
    608: "Rejected",
}


def reason_phrase(status: int) -> str:
    """The usual reason phrase for a status code ("Unknown" for codes we do not know)."""
    return REASON_PHRASES.get(status, "Unknown")


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return data[:end], data[end + 4 :]
    end = data.find(b"\n\n")  # bare-LF senders; RFC 3261 requires CRLF but costs nothing to accept
    if end >= 0:
        return data[:end], data[end + 2 :]
    if data.endswith(b"\r\n"):  # header block with no empty line at all (and so no body)
        return data[:-2], b""
    raise SipParseError("no empty line after the headers")


def _header_lines(head: str) -> list[str]:
    lines = head.split("\n")
    if "\r" in head:
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    return lines


def _parse_headers(lines: list[str]) -> Headers:
    headers = Headers()
    entries = headers._entries
    folded = any(line[:1] in (" ", "\t") for line in lines)
    if folded:
        if lines and lines[0][:1] in (" ", "\t"):
            raise SipParseError("the first header line starts with whitespace")
        unfolded: list[str] = []
        for line in lines:
            if line[:1] in (" ", "\t"):
                unfolded[-1] = unfolded[-1].rstrip(" \t") + " " + line.strip(" \t")
            else:
                unfolded.append(line)
        lines = unfolded
    if len(lines) > MAX_HEADER_COUNT:
        raise SipParseError(f"more than {MAX_HEADER_COUNT} headers")
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(f"header line without a colon: {line[:40]!r}")
        cached = _KEY_CACHE.get(name)  # only valid names are cached
        if cached is None:
            name = name.rstrip(" \t")
            if not _TOKEN.fullmatch(name):
                raise SipParseError(f"invalid header name {name[:40]!r}")
            cached = _header_key(name)
        entries.append((cached[0], cached[1], value.strip(" \t")))
    return headers


def _parse_start_line(line: str) -> tuple[str, str, str]:
    """(version, status, reason) of a status line, or (method, uri, version) of a request line."""
    if line[:4].upper() == "SIP/":
        parts = line.split(" ", 2)
        if len(parts) == 2:  # "SIP/2.0 100" without the SP before an empty reason
            parts.append("")
        valid = len(parts) == 3 and bool(parts[0]) and bool(parts[1])
    else:
        parts = line.split(" ")  # exactly one SP between the elements (RFC 3261 §7.1)
        valid = len(parts) == 3 and all(parts)
    if not valid:
        raise SipParseError(f"malformed start line {line[:80]!r}")
    return parts[0], parts[1], parts[2]


def _check_version(version: str) -> None:
    if version.upper() != "SIP/2.0":
        raise SipParseError(f"unsupported SIP version {version[:20]!r}")


def _content_length(values: list[str]) -> int | None:
    if not values:
        return None
    first = values[0].strip()
    if not _DIGITS.fullmatch(first):
        raise SipParseError(f"invalid Content-Length {first[:20]!r}")
    if any(value.strip() != first for value in values[1:]):
        raise SipParseError("conflicting Content-Length headers")
    return int(first)


_SINGLETONS = {
    "from": "From",
    "to": "To",
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "max-forwards": "Max-Forwards",
    "content-type": "Content-Type",
}
_MANDATORY = {"via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq"}


def _index(headers: Headers) -> dict[str, list[str]]:
    index: dict[str, list[str]] = {}
    for key, _, value in headers._entries:
        values = index.get(key)
        if values is None:
            index[key] = [value]
        else:
            values.append(value)
    return index


def _check_number(index: dict[str, list[str]], key: str, name: str, limit: int) -> None:
    values = index.get(key)
    if values and (not _DIGITS.fullmatch(values[0]) or int(values[0]) > limit):
        raise SipParseError(f"invalid {name} {values[0][:20]!r}")


def _validate(message: SipMessage, index: dict[str, list[str]]) -> None:
    """Check what a UA relies on later, so the properties do not raise on a message that parsed."""
    for key, name in _SINGLETONS.items():
        if len(index.get(key, ())) > 1:
            raise SipParseError(f"more than one {name} header")
    if isinstance(message, SipRequest):
        for key, name in _MANDATORY.items():
            if key not in index:
                raise SipParseError(f"missing {name} header")
        _check_number(index, "max-forwards", "Max-Forwards", _MAX_FORWARDS)
    if "cseq" in index:
        _, method = parse_cseq(index["cseq"][0])
        if isinstance(message, SipRequest) and method != message.method:
            raise SipParseError(f"CSeq method {method} does not match the request method {message.method}")
    if "call-id" in index and not index["call-id"][0]:
        raise SipParseError("empty Call-ID")
    for value in index.get("via", ()):
        for element in split_header_list(value):
            parse_via(element)
    for key in ("from", "to"):
        if key in index:
            parse_name_addr(index[key][0])
    for value in index.get("contact", ()):
        if value != "*":
            for element in split_header_list(value):
                parse_name_addr(element)
    _check_number(index, "expires", "Expires", 2**32 - 1)


def parse_message(data: bytes) -> SipMessage:
    """Parse one whole message (a UDP datagram or a framed TCP message). Raises SipParseError."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError(f"message larger than {MAX_MESSAGE_BYTES} bytes")
    head_bytes, body = _split_head(data)
    if len(head_bytes) > MAX_HEADER_BYTES:
        raise SipParseError(f"headers larger than {MAX_HEADER_BYTES} bytes")
    head = head_bytes.decode("utf-8", "surrogateescape")
    lines = _header_lines(head)
    first, second, third = _parse_start_line(lines[0])
    headers = _parse_headers(lines[1:])
    message: SipMessage
    if first[:4].upper() == "SIP/":
        _check_version(first)
        if len(second) != 3 or not second.isdigit() or not 100 <= int(second) <= 699:
            raise SipParseError(f"invalid status code {second[:20]!r}")
        message = SipResponse(int(second), third, headers)
    else:
        _check_version(third)
        if not _TOKEN.fullmatch(first):
            raise SipParseError(f"invalid method {first[:20]!r}")
        uri = parse_uri(second)
        if uri.headers:
            raise SipParseError("the Request-URI must not carry headers")
        message = SipRequest(first, uri, headers)
    index = _index(headers)
    length = _content_length(index.get("content-length", []))
    if length is not None:
        if length > len(body):
            raise SipParseError(f"Content-Length {length} is larger than the {len(body)}-byte body")
        body = body[:length]
    message.body = body
    _validate(message, index)
    return message


def _start_line(message: SipMessage) -> str:
    if isinstance(message, SipRequest):
        return f"{message.method} {message.uri} SIP/2.0"
    return f"SIP/2.0 {message.status} {message.reason}"


def _clean(value: str) -> str:
    # a value must never end the header line early (header injection through a configured value)
    if "\n" in value or "\r" in value:
        return " ".join(value.split())
    return value


def serialize(message: SipMessage) -> bytes:
    """Wire form: CRLF line ends, Content-Length set from the body (written last)."""
    lines = [_start_line(message)]
    lines += [
        f"{name}: {_clean(value)}" for key, name, value in message.headers._entries if key != "content-length"
    ]
    lines.append(f"Content-Length: {len(message.body)}")
    lines.append("")
    lines.append("")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape") + message.body


def response_to(
    request: SipRequest, status: int, reason: str | None = None, *, to_tag: str | None = None
) -> SipResponse:
    """A response to `request` (RFC 3261 §8.2.6): Via (all, in order), From, To (+ to_tag), Call-ID, CSeq."""
    headers = Headers()
    entries = headers._entries
    for entry in request.headers._entries:
        if entry[0] == "via":
            entries.append(entry)
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = request.headers.get(name)
        if value is None:
            continue
        if name == "To" and to_tag is not None:
            to = parse_name_addr(value)
            if to.tag is None:
                value = str(to.with_tag(to_tag))
        headers.add(name, value)
    headers.add("Content-Length", "0")
    return SipResponse(status, reason if reason is not None else reason_phrase(status), headers)


# --- TCP / TLS framing (RFC 3261 §18.3) ---------------------------------------------------------------

_CONTENT_LENGTH_NAMES = (b"content-length", b"l")


def _stream_content_length(head: bytes) -> int:
    found: int | None = None
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.rstrip(b" \t").lower() in _CONTENT_LENGTH_NAMES:
            text = value.strip(b" \t")
            if not text.isdigit() or len(text) > 10:
                raise SipParseError(f"invalid Content-Length {text[:20]!r}")
            length = int(text)
            if found is not None and found != length:
                raise SipParseError("conflicting Content-Length headers")
            found = length
    if found is None:
        raise SipParseError("Content-Length is mandatory on a stream transport")
    return found


class StreamFramer:
    """Cuts a TCP/TLS byte stream into whole messages, by Content-Length (RFC 3261 §18.3).

    CRLFs between messages are keep-alives (RFC 5626 §3.5.1: "\\r\\n\\r\\n" ping, "\\r\\n" pong) and skipped;
    `pings` counts the double-CRLF pings so the transport can answer each with a single CRLF.
    A SipParseError from feed() means the stream cannot be resynchronised: close the connection.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._crlfs = 0
        self.pings = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; returns the messages they complete, in order."""
        buffer = self._buffer
        buffer += data
        messages: list[bytes] = []
        while buffer:
            skip = 0
            while skip < len(buffer) and buffer[skip] in (0x0D, 0x0A):
                if buffer[skip] == 0x0A:
                    self._crlfs += 1
                    if self._crlfs == 2:
                        self.pings += 1
                        self._crlfs = 0
                skip += 1
            if skip:
                del buffer[:skip]
                if not buffer:
                    break
            self._crlfs = 0
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEADER_BYTES:
                    raise SipParseError(f"headers larger than {MAX_HEADER_BYTES} bytes")
                break
            if end > MAX_HEADER_BYTES:
                raise SipParseError(f"headers larger than {MAX_HEADER_BYTES} bytes")
            length = _stream_content_length(bytes(buffer[:end]))
            total = end + 4 + length
            if total > MAX_MESSAGE_BYTES:
                raise SipParseError(f"message larger than {MAX_MESSAGE_BYTES} bytes")
            if len(buffer) < total:
                break
            messages.append(bytes(buffer[:total]))
            del buffer[:total]
        return messages

    @property
    def buffered(self) -> int:
        """Bytes held for a message not yet complete."""
        return len(self._buffer)


# --- identifiers --------------------------------------------------------------------------------------


def new_branch() -> str:
    """A fresh RFC 3261 Via branch ("z9hG4bK" + 80 random bits)."""
    return BRANCH_MAGIC + secrets.token_hex(10)


def next_attempt(request: SipRequest, headers: Headers) -> SipRequest:
    """`request` sent again as a new transaction with `headers` (a changed copy of its own): CSeq + 1 and
    a new top Via branch (RFC 3261 §8.1.3.5), same Call-ID, tags and body."""
    headers = headers.copy()
    number, method = request.cseq
    headers.set("CSeq", f"{number + 1} {method}")
    vias = request.vias
    vias[0].params["branch"] = new_branch()
    headers.set("Via", ", ".join(str(via) for via in vias))
    return replace(request, headers=headers)


def new_tag() -> str:
    """A fresh From/To tag (64 random bits)."""
    return secrets.token_hex(8)


def new_call_id(host: str) -> str:
    """A fresh Call-ID, `random@host`."""
    return f"{secrets.token_hex(16)}@{host}"
