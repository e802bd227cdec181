"""Imported telephony credentials (`/api/telephony_configs/{provider}`).

Each provider's model lists its own fields and which of them are secret; secrets are write-only and show
up in responses only as `<name>Prefix`. Adding a provider means adding one model to `CONFIG_MODELS`.
"""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import UUID

from pydantic import AnyHttpUrl, Field, model_validator

from app.schemas.base import ApiModel

SECRET_PREFIX_LENGTH = 4


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


CONFIG_MODELS: dict[str, type[TelephonyConfigBase]] = {
    "twilio": TwilioConfig,
}
