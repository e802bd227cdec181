"""The account SIP config (`/api/sip`), Ultravox-shaped.

`SipConfigFields` is what is stored and edited; `SipConfigUpdate` is a PATCH body (only the fields given
change); `SipConfig` is the response, adding the read-only `domain` and the (part 1: always null)
`fallbackHandler`. Errors with their own code are `PydanticCustomError`s whose type is that code
(`SIP_ERROR_CODES`), so the API can answer with it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from app.schemas.base import ApiModel

MAX_ALLOWED_AGENTS = 20
MAX_CIDR_RANGES = 100
MAX_PATTERN_LENGTH = 200
#: Validation error types that are also the response's `code`.
SIP_ERROR_CODES = frozenset({"invalid_cidr", "invalid_pattern", "fallback_handler_unsupported"})


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


class SipConfigFields(ApiModel):
    """The editable account SIP config. A fresh install allows no source and no agent."""

    allowed_cidr_ranges: Annotated[list[CidrRange], AfterValidator(_unique)] = Field(
        default_factory=list, max_length=MAX_CIDR_RANGES
    )
    allow_all_agents: bool = False
    allowed_agents: list[AllowedAgent] = Field(default_factory=list, max_length=MAX_ALLOWED_AGENTS)

    def updated(self, patch: SipConfigUpdate) -> SipConfigFields:
        """These fields with the ones `patch` gives replaced."""
        given = patch.model_fields_set & set(type(self).model_fields)
        return self.model_copy(update={name: getattr(patch, name) for name in given})


class SipConfigUpdate(SipConfigFields):
    """`PATCH /api/sip`: the fields given replace the stored ones.

    `fallbackHandler` must be null (handlers arrive with SIP part 2). `domain` is read-only: the API refuses
    one that differs from the current domain (sending back a GET's body unchanged is fine).
    """

    fallback_handler: dict[str, Any] | None = None
    domain: str | None = None

    @field_validator("fallback_handler")
    @classmethod
    def _no_fallback_yet(cls, value: dict[str, Any] | None) -> None:
        if value is not None:
            raise PydanticCustomError(
                "fallback_handler_unsupported",
                "fallback handlers are not supported yet (they arrive with SIP part 2); send null",
            )
        return None


class SipConfig(SipConfigFields):
    """`GET /api/sip` and the PATCH response."""

    fallback_handler: None = None
    domain: str

    def to_json(self) -> dict[str, Any]:
        """Every field, `fallbackHandler: null` included."""
        return self.model_dump(mode="json", by_alias=True)
