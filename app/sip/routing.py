"""Incoming SIP policy: which sources may call, which agent answers, and the context a call gets.

`SipPolicy` is the account SIP config ready to apply to an INVITE. `sip_context` turns the INVITE's `X-`
headers and From into context; `template_context` fits that context to the agent's context schema.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from jsonschema import Draft202012Validator

from app.calls.templates import merge_context
from app.schemas.sip import FallbackHandler, SipConfigFields

#: The Request-URI user that reaches agent `<id>` when `allowAllAgents` is on.
AGENT_USER_PREFIX = "agent_"
#: The context key callbridge's own values live under (`callbridge.sip.caller_id`); no header may set it.
RESERVED_KEY = "callbridge"
MAX_CONTEXT_HEADERS = 32
MAX_HEADER_VALUE_BYTES = 4 * 1024
MAX_HEADERS_TOTAL_BYTES = 16 * 1024


@dataclass(frozen=True)
class SipPolicy:
    """Who may send INVITEs and which agent each one reaches. The default allows nothing."""

    networks: tuple[ipaddress.IPv4Network, ...] = ()
    allow_all_agents: bool = False
    #: (agent id, toUserPattern compiled), in the config's order.
    patterns: tuple[tuple[str, re.Pattern[str]], ...] = ()
    #: Asked about an INVITE `route` finds no agent for (None: such an INVITE gets 404).
    fallback: FallbackHandler | None = None

    @classmethod
    def from_config(cls, config: SipConfigFields) -> SipPolicy:
        return cls(
            networks=tuple(ipaddress.IPv4Network(cidr) for cidr in config.allowed_cidr_ranges),
            allow_all_agents=config.allow_all_agents,
            patterns=tuple(
                (agent.agent_id, re.compile(agent.to_user_pattern or "")) for agent in config.allowed_agents
            ),
            fallback=config.fallback_handler,
        )

    def source_allowed(self, ip: str) -> bool:
        """Is `ip` inside an allowed range? IPv4 only (an IPv4-mapped IPv6 address counts as its IPv4)."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is None:
                return False
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def route(self, user: str | None) -> str | None:
        """The agent id for a Request-URI `user` (percent-decoded), or None: refuse with 404.

        The patterns first, in order, each matching the whole user (no user is the empty string); then
        `agent_<agentId>` when `allowAllAgents`. The agent may have been deleted since: the caller checks.
        """
        user = user or ""
        for agent_id, pattern in self.patterns:
            if pattern.fullmatch(user):
                return agent_id
        if (
            self.allow_all_agents
            and user.startswith(AGENT_USER_PREFIX)
            and len(user) > len(AGENT_USER_PREFIX)
        ):
            return user[len(AGENT_USER_PREFIX) :]
        return None


@dataclass(frozen=True)
class SipContext:
    """The context an incoming INVITE brings, before it meets the agent's context schema."""

    #: From the `X-` headers: `X-Customer-Name: Bob` → `{"customer_name": "Bob"}` (values JSON-parsed).
    headers: dict[str, Any]
    #: callbridge's own values, `caller_id`, `from_display_name`, `from_uri` (the ones known).
    system: dict[str, str]
    #: Why each `X-` header left out was left out (over a cap, a duplicate, the reserved key): for a warning.
    dropped: tuple[str, ...] = ()


def header_key(name: str) -> str:
    """The context key of an `X-` header: `X-Customer-Name` → `customer_name`."""
    return name[2:].lower().replace("-", "_")


def _header_value(raw: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


def _refusal(raw: str, key: str, size: int, kept: dict[str, Any], kept_bytes: int) -> str | None:
    """Why the `X-` header with this key and value is not taken as context, or None when it is."""
    if not key:
        return "no name after X-"
    if key == RESERVED_KEY:
        return f"the {RESERVED_KEY!r} key is callbridge's own"
    if key in kept:
        return f"a second header for {key!r}"
    if len(kept) >= MAX_CONTEXT_HEADERS:
        return f"over {MAX_CONTEXT_HEADERS} headers"
    if size > MAX_HEADER_VALUE_BYTES:
        return f"value of {size} bytes, over {MAX_HEADER_VALUE_BYTES}"
    if kept_bytes + size > MAX_HEADERS_TOTAL_BYTES:
        return f"over {MAX_HEADERS_TOTAL_BYTES} bytes of header values in all"
    if _has_surrogates(raw):  # a lone surrogate (a parser's surrogateescape) cannot be stored as JSON
        return "value is not UTF-8"
    return None


def _has_surrogates(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def sip_context(
    headers: Iterable[tuple[str, str]], caller_id: str | None, display_name: str | None, from_uri: str | None
) -> SipContext:
    """The context of an INVITE from its headers (only `X-` ones are used) and its From.

    Caps, in header order: at most MAX_CONTEXT_HEADERS headers, MAX_HEADER_VALUE_BYTES per value and
    MAX_HEADERS_TOTAL_BYTES for all values kept; a header beyond a cap is dropped (and named in `dropped`),
    as is a second header with the same key and one whose key would be `callbridge`.
    """
    context: dict[str, Any] = {}
    dropped: list[str] = []
    total = 0
    for name, raw in headers:
        if not name.lower().startswith("x-"):
            continue
        key = header_key(name)
        size = len(raw.encode(errors="replace"))
        if (reason := _refusal(raw, key, size, context, total)) is not None:
            dropped.append(f"{name}: {reason}")
            continue
        context[key] = _header_value(raw)
        total += size
    system = {
        name: value
        for name, value in (
            ("caller_id", caller_id),
            ("from_display_name", display_name),
            ("from_uri", from_uri),
        )
        if value is not None
    }
    return SipContext(headers=context, system=system, dropped=tuple(dropped))


@dataclass(frozen=True)
class TemplateContext:
    """A SIP call's context fitted to the agent's context schema."""

    context: dict[str, Any]
    #: Every `X-` header left out, with why (caps, or the schema refusing it): for the call's warning.
    dropped: tuple[str, ...] = field(default=())


def template_context(sip: SipContext, schema: dict[str, Any] | None) -> TemplateContext:
    """The context of the call created for an INVITE, as request context (the way a provider webhook's is).

    Each value is added only where `schema` allows it: a value is kept when adding it brings no new schema
    error. Without a schema everything is kept. So `callbridge.sip.*` appear when the schema declares
    them or lets additional properties in, and they are left out silently otherwise (Ultravox's rule for
    `ultravox.sip.*`). An `X-` header the schema refuses (a wrong type, additionalProperties false) is
    left out too, named in `dropped`: a caller's stray header does not refuse the call. What the schema
    requires but no header gave is not this function's business: creating the call validates the whole
    context and refuses it.
    """
    system = {RESERVED_KEY: {"sip": dict(sip.system)}} if sip.system else {}
    if schema is None:
        return TemplateContext(context={**sip.headers, **system}, dropped=sip.dropped)
    fitter = _SchemaFitter(schema)
    # All together first: a schema may require them together; else each one it allows.
    if system and fitter.add(system) is not None:
        for name, value in sip.system.items():
            fitter.add({RESERVED_KEY: {"sip": {name: value}}})
    dropped = list(sip.dropped)
    for key, value in sip.headers.items():
        if (refusal := fitter.add({key: value})) is not None:
            dropped.append(f"X-header {key!r}: {refusal}")
    return TemplateContext(context=fitter.context, dropped=tuple(dropped))


class _SchemaFitter:
    """Grows a context one value at a time, refusing each value that adds a schema error."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.validator = Draft202012Validator(schema)
        self.context: dict[str, Any] = {}
        self.errors = self._errors(self.context)

    def _errors(self, context: dict[str, Any]) -> set[tuple[tuple[str | int, ...], str, str]]:
        return {
            (tuple(error.absolute_path), str(error.validator), error.message)
            for error in self.validator.iter_errors(context)
        }

    def add(self, extra: dict[str, Any]) -> str | None:
        """Merge `extra` in unless it adds an error; returns the (first) new error's message if refused."""
        candidate = merge_context(self.context, extra)
        errors = self._errors(candidate)
        if new := errors - self.errors:
            return min(new, key=str)[2]
        self.context, self.errors = candidate, errors
        return None
