"""Imported telephony credentials (`/api/telephony_configs/{provider}`).

Each provider's model lists its own fields and which of them are secret; secrets are write-only and show
up in responses only as `<name>Prefix`. Adding a provider means adding one model to `CONFIG_MODELS`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from typing import Any, ClassVar, Literal
from uuid import UUID

from pydantic import AnyHttpUrl, Field, field_validator, model_validator

from app.schemas.base import ApiModel

SECRET_PREFIX_LENGTH = 4
#: What `repr` (and so a log line or a traceback) shows instead of a secret field.
HIDDEN = "**********"


class TelephonyConfigBase(ApiModel):
    """Fields every provider's config has."""

    secret_fields: ClassVar[tuple[str, ...]] = ()

    call_creation_allowed_agent_ids: list[UUID] = Field(default_factory=list, max_length=100)
    call_creation_allow_all_agents: bool = False
    request_context_mapping: dict[str, str] = Field(default_factory=dict)
    api_base_url: AnyHttpUrl | None = None

    @model_validator(mode="after")
    def _allow_list_xor_all(self) -> TelephonyConfigBase:
        if self.call_creation_allow_all_agents and self.call_creation_allowed_agent_ids:
            raise ValueError("set callCreationAllowedAgentIds or callCreationAllowAllAgents, not both")
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, HIDDEN if name in self.secret_fields else value

    def allows_agent(self, agent_id: str) -> bool:
        """May incoming calls (and calls dialled with these credentials) use this agent?"""
        return self.call_creation_allow_all_agents or any(
            str(a) == agent_id for a in self.call_creation_allowed_agent_ids
        )

    def split(self) -> tuple[dict[str, Any], dict[str, str]]:
        """(public fields as JSON, secret fields as plain strings) for storage."""
        data = self.model_dump(mode="json", by_alias=True)
        secrets = {}
        for name in self.secret_fields:
            alias = type(self).model_fields[name].alias or name
            secrets[alias] = data.pop(alias)
        return data, secrets

    def public_view(self) -> dict[str, Any]:
        """The response body: every field, with each secret replaced by its prefix."""
        public, secrets = self.split()
        for alias, value in secrets.items():
            public[f"{alias}Prefix"] = value[:SECRET_PREFIX_LENGTH]
        return public

    def credentials(self) -> dict[str, str]:
        """Every string field by its JSON name: what provider code signs and calls with."""
        data = self.model_dump(mode="json", by_alias=True)
        return {k: v for k, v in data.items() if isinstance(v, str)}


class TwilioConfig(TelephonyConfigBase):
    secret_fields = ("auth_token",)

    account_sid: str = Field(min_length=1, max_length=64)
    auth_token: str = Field(min_length=1, max_length=256)


ByteOrderName = Literal["big", "little"]


class TelnyxConfig(TelephonyConfigBase):
    """Telnyx: `publicKey` verifies signed webhooks; `apiKey` and `applicationSid` place calls.

    `streamCodec` picks the TeXML stream's codec both ways: `L16` at 16 kHz (HD, the default) or
    `PCMU`/`PCMA` at 8 kHz. `l16ByteOrder` is how Telnyx orders L16 samples (RTP's network order by default).
    """

    secret_fields = ("api_key", "public_key")

    account_sid: str | None = Field(default=None, max_length=64)
    api_key: str = Field(min_length=1, max_length=256)
    public_key: str = Field(min_length=1, max_length=256)
    application_sid: str | None = Field(default=None, max_length=40)
    stream_codec: Literal["L16", "PCMU", "PCMA"] = "L16"
    l16_byte_order: ByteOrderName = "big"

    @field_validator("public_key")
    @classmethod
    def _ed25519_public_key(cls, value: str) -> str:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("publicKey must be the base64 Ed25519 key from the Telnyx portal") from None
        if len(raw) != 32:
            raise ValueError(f"publicKey must decode to 32 bytes (an Ed25519 key), not {len(raw)}")
        return value


class PlivoConfig(TelephonyConfigBase):
    """Plivo: `authToken` verifies V3 signatures; `streamContentType` picks the `<Stream>` audio."""

    secret_fields = ("auth_token",)

    auth_id: str = Field(min_length=1, max_length=64)
    auth_token: str = Field(min_length=1, max_length=256)
    stream_content_type: Literal[
        "audio/x-l16;rate=16000", "audio/x-l16;rate=8000", "audio/x-mulaw;rate=8000"
    ] = "audio/x-l16;rate=16000"
    l16_byte_order: ByteOrderName = "little"


CONFIG_MODELS: dict[str, type[TelephonyConfigBase]] = {
    "twilio": TwilioConfig,
    "telnyx": TelnyxConfig,
    "plivo": PlivoConfig,
}
