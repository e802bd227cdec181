"""The account SIP config (`/api/sip`), Ultravox-shaped.

`SipConfigFields` is what is stored and edited; `SipConfigUpdate` is a PATCH body (only the fields given
change); `SipConfig` is the response, adding the read-only `domain`. The fallback handler's secrets are
write-only: a response shows their `secretPrefixes`, and the full `secrets` only in the PATCH response that
generated them. Errors with their own code are `PydanticCustomError`s whose type is that code
(`SIP_ERROR_CODES`), so the API can answer with it.
"""

from __future__ import annotations

import ipaddress
import re
import secrets as random_secrets
from typing import Annotated, Any

from pydantic import AfterValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from app.schemas.base import ApiModel

MAX_ALLOWED_AGENTS = 20
MAX_CIDR_RANGES = 100
MAX_PATTERN_LENGTH = 200
#: Ultravox's bounds on a fallback handler's secrets.
MAX_HANDLER_SECRETS = 10
MAX_HANDLER_SECRET_LENGTH = 120
#: How much of each secret responses show (as with imported telephony credentials).
SECRET_PREFIX_LENGTH = 4
#: Validation error types that are also the response's `code`.
SIP_ERROR_CODES = frozenset({"invalid_cidr", "invalid_pattern"})


def _invalid_cidr(message: str, **context: str) -> PydanticCustomError:
    # Values go in as context, never into the template itself: a brace in the input stays literal.
    return PydanticCustomError("invalid_cidr", message, context)


def _is_ipv6_network(value: str) -> bool:
    try:
        ipaddress.IPv6Network(value, strict=False)
    except ValueError:
        return False
    return True


def _ipv4_network(value: str) -> str:
    """`value` as a normalized IPv4 network (`10.0.0.1` → `10.0.0.1/32`); host bits must be zero."""
    try:
        network = ipaddress.IPv4Network(value, strict=False)
    except ValueError as exc:
        if _is_ipv6_network(value):
            raise _invalid_cidr(
                "{value} is IPv6; only IPv4 ranges are supported", value=repr(value)
            ) from None
        raise _invalid_cidr(
            "{value} is not an IPv4 CIDR range: {error}", value=repr(value), error=str(exc)
        ) from None
    if ipaddress.IPv4Interface(value).ip != network.network_address:
        raise _invalid_cidr(
            "{value} has host bits set; did you mean {network}?",
            value=repr(value),
            network=repr(str(network)),
        )
    return str(network)


CidrRange = Annotated[str, Field(max_length=64), AfterValidator(_ipv4_network)]


def _compiled(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise PydanticCustomError(
            "invalid_pattern",
            "{pattern} is not a valid regular expression: {error}",
            {"pattern": repr(pattern), "error": str(exc)},
        ) from None
    return pattern


UserPattern = Annotated[str, Field(min_length=1, max_length=MAX_PATTERN_LENGTH), AfterValidator(_compiled)]


class AllowedAgent(ApiModel):
    """INVITEs whose Request-URI user fully matches `toUserPattern` go to `agentId`.

    Without a pattern the agent gets Ultravox's default, `^agent_<agentId>$`.
    """

    agent_id: str = Field(min_length=1, max_length=36)
    to_user_pattern: UserPattern | None = None

    @model_validator(mode="after")
    def _default_pattern(self) -> AllowedAgent:
        if self.to_user_pattern is None:
            # A dash outside [] is literal: left unescaped, a UUID's pattern stays readable.
            literal = re.escape(self.agent_id).replace("\\-", "-")
            self.to_user_pattern = f"^agent_{literal}$"
        return self


def _unique(ranges: list[str]) -> list[str]:
    return list(dict.fromkeys(ranges))


HandlerUrl = Annotated[str, Field(max_length=2000, pattern=r"^https?://[^\s/]+\S*$")]
HandlerSecret = Annotated[str, Field(min_length=1, max_length=MAX_HANDLER_SECRET_LENGTH)]


class FallbackHandler(ApiModel):
    """Where INVITEs no route matches are sent for a decision, and the secrets that sign them."""

    url: HandlerUrl
    secrets: list[HandlerSecret] = Field(min_length=1, max_length=MAX_HANDLER_SECRETS, repr=False)

    def view(self, *, with_secrets: bool = False) -> FallbackHandlerView:
        """As responses show it: the secrets' prefixes, and the secrets themselves only `with_secrets`."""
        return FallbackHandlerView(
            url=self.url,
            secret_prefixes=[secret[:SECRET_PREFIX_LENGTH] for secret in self.secrets],
            secrets=list(self.secrets) if with_secrets else None,
        )


class FallbackHandlerView(ApiModel):
    """`fallbackHandler` in responses: `secrets` only in the PATCH that generated one."""

    url: str
    secret_prefixes: list[str]
    secrets: list[str] | None = None


class FallbackHandlerUpdate(ApiModel):
    """`fallbackHandler` in a PATCH. Without `secrets` the handler keeps the ones it has, or (a new
    handler) gets one generated. `secretPrefixes` is read-only and ignored, so a GET's body can be sent
    back."""

    url: HandlerUrl
    secrets: list[HandlerSecret] | None = Field(
        default=None, min_length=1, max_length=MAX_HANDLER_SECRETS, repr=False
    )
    secret_prefixes: list[str] | None = None

    def generates_secret(self, current: FallbackHandler | None) -> bool:
        """Whether applying this to `current` makes a new secret (none given, none to keep)."""
        return self.secrets is None and current is None

    def applied_to(self, current: FallbackHandler | None) -> FallbackHandler:
        """The handler this update makes of `current`."""
        if self.generates_secret(current):
            kept = [generate_handler_secret()]
        else:
            kept = self.secrets or (current.secrets if current is not None else [])
        return FallbackHandler(url=self.url, secrets=kept)


def generate_handler_secret() -> str:
    """A new random secret (43 URL-safe characters: 256 bits)."""
    return random_secrets.token_urlsafe(32)


class SipConfigFields(ApiModel):
    """The editable account SIP config. A fresh install allows no source and no agent."""

    allowed_cidr_ranges: Annotated[list[CidrRange], AfterValidator(_unique)] = Field(
        default_factory=list, max_length=MAX_CIDR_RANGES
    )
    allow_all_agents: bool = False
    allowed_agents: list[AllowedAgent] = Field(default_factory=list, max_length=MAX_ALLOWED_AGENTS)
    fallback_handler: FallbackHandler | None = None

    def updated(self, patch: SipConfigUpdate) -> SipConfigFields:
        """These fields with the ones `patch` gives replaced."""
        given = patch.model_fields_set & set(type(self).model_fields)
        update = {name: getattr(patch, name) for name in given - {"fallback_handler"}}
        if "fallback_handler" in given:
            handler = patch.fallback_handler
            current = self.fallback_handler
            update["fallback_handler"] = None if handler is None else handler.applied_to(current)
        return self.model_copy(update=update)


class SipConfigUpdate(SipConfigFields):
    """`PATCH /api/sip`: the fields given replace the stored ones (`fallbackHandler: null` removes it).

    `domain` is read-only: the API refuses one that differs from the current domain (sending back a GET's
    body unchanged is fine).
    """

    fallback_handler: FallbackHandlerUpdate | None = None  # type: ignore[assignment]
    domain: str | None = None


class SipConfig(SipConfigFields):
    """`GET /api/sip` and the PATCH response."""

    fallback_handler: FallbackHandlerView | None = None  # type: ignore[assignment]
    domain: str

    @classmethod
    def shown(cls, config: SipConfigFields, domain: str, *, with_secrets: bool = False) -> SipConfig:
        """`config` as responses show it; the handler's secrets only `with_secrets`."""
        handler = config.fallback_handler
        view = None if handler is None else handler.view(with_secrets=with_secrets)
        return cls(**{**dict(config), "fallback_handler": view}, domain=domain)

    def to_json(self) -> dict[str, Any]:
        """Every field, `fallbackHandler: null` included (its `secrets` only when shown)."""
        shown = self.model_dump(mode="json", by_alias=True)
        if self.fallback_handler is not None:
            shown["fallbackHandler"] = self.fallback_handler.to_json()
        return shown
