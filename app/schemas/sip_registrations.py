"""SIP registrations (`/api/sip/registrations`): callbridge registered as a user on a PBX (Ultravox-shaped,
plus `lastError`, `expiresAt` and `tlsVerify`).

`proxy` and `outboundProxy` are a host (`pbx.example.com`, `10.0.0.5:5080`), optionally with URI
parameters (`pbx.example.com;transport=tcp`), or a whole `sip:`/`sips:` URI without a user. The password is
write-only: no response carries it. Errors with their own code are `PydanticCustomError`s whose type is
that code (`REGISTRATION_ERROR_CODES`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, Field, field_validator
from pydantic_core import PydanticCustomError

from app.schemas.base import ApiModel
from app.sip.message import SipParseError, SipUri, parse_uri

MAX_USERNAME = 60
MAX_PROXY = 100
MAX_PASSWORD = 128
#: Validation error types that are also the response's `code`.
REGISTRATION_ERROR_CODES = frozenset({"invalid_sip_uri", "invalid_username"})


def parse_registrar(text: str) -> SipUri:
    """A `proxy`/`outboundProxy` value as a SIP URI without a user; SipParseError saying why not."""
    uri = parse_uri(text if text.lower().startswith(("sip:", "sips:")) else f"sip:{text}")
    if uri.user is not None:
        raise SipParseError("it has a user part (the user goes in username)")
    if uri.headers:
        raise SipParseError("URI headers (?...) are not allowed here")
    transport = uri.transport
    if transport not in ("udp", "tcp", "tls"):
        raise SipParseError(f"transport {transport!r} is not udp, tcp or tls")
    return uri


def _registrar(text: str) -> str:
    try:
        parse_registrar(text)
    except SipParseError as exc:
        raise PydanticCustomError(
            "invalid_sip_uri",
            "{value} is not a SIP server address: {error}",
            {"value": repr(text), "error": str(exc)},
        ) from None
    return text


def _user_part(text: str) -> str:
    if "@" in text:
        raise PydanticCustomError(
            "invalid_username",
            "{value}: the user part only (the domain goes in proxy)",
            {"value": repr(text)},
        )
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        raise PydanticCustomError(
            "invalid_username", "{value} has spaces or control characters", {"value": repr(text)}
        )
    return text


Registrar = Annotated[str, Field(min_length=1, max_length=MAX_PROXY), AfterValidator(_registrar)]
UserPart = Annotated[str, Field(min_length=1, max_length=MAX_USERNAME), AfterValidator(_user_part)]
Password = Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD)]


class SipRegistrationCreate(ApiModel):
    """`POST /api/sip/registrations`."""

    username: UserPart
    password: Password = Field(repr=False)
    #: The registrar: the AOR is `username@<its host>`, the REGISTER goes to it (or to outboundProxy).
    proxy: Registrar
    #: Where the REGISTER is sent instead (as the next hop, with a Route), the AOR staying on `proxy`.
    outbound_proxy: Registrar | None = None
    #: The digest username, when the PBX's differs from `username`.
    auth_user: UserPart | None = None
    #: Verify the registrar's TLS certificate (sips: or transport=tls); off for a self-signed PBX.
    tls_verify: bool = True


class SipRegistrationUpdate(ApiModel):
    """`PATCH /api/sip/registrations/{registrationId}`: the fields given replace the stored ones (null
    clears `outboundProxy` / `authUser`); the registration restarts with them."""

    username: UserPart | None = None
    password: Password | None = Field(default=None, repr=False)
    proxy: Registrar | None = None
    outbound_proxy: Registrar | None = None
    auth_user: UserPart | None = None
    tls_verify: bool | None = None

    @field_validator("username", "password", "proxy", "tls_verify")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("may not be null (only outboundProxy and authUser can be cleared)")
        return value

    def changes(self) -> dict[str, Any]:
        """The fields given, by Python name (None for the cleared optional ones)."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class SipRegistration(ApiModel):
    """A registration as the API shows it: never the password."""

    registration_id: str
    created: datetime
    username: str
    proxy: str
    outbound_proxy: str | None
    auth_user: str | None
    tls_verify: bool
    #: Null until the registrar first answers; then whether its last answer granted the binding.
    successful: bool | None
    #: Why the last attempt failed ("403 Forbidden", "timeout ..."); null after a success.
    last_error: str | None
    #: When the binding the registrar granted ends (callbridge refreshes it before).
    expires_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        """Every field, nulls included."""
        return self.model_dump(mode="json", by_alias=True)
