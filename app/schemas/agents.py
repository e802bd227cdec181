"""Agents and their call templates."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import Field, field_validator

from app.schemas.base import ApiModel
from app.schemas.media import CallSettings


class CallTemplate(CallSettings):
    """The settings every call of an agent starts from. Mustache `{{a.b}}` fields are rendered per call."""

    name: str | None = Field(default=None, max_length=64)
    context_schema: dict[str, Any] | None = None

    @field_validator("context_schema")
    @classmethod
    def _valid_json_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                Draft202012Validator.check_schema(value)
            except SchemaError as exc:
                path = "/".join(str(p) for p in exc.path) or "(root)"
                raise ValueError(f"not a valid JSON Schema at {path}: {exc.message}") from None
        return value


class CallTemplateOut(CallTemplate):
    created: datetime
    updated: datetime


class AgentCreate(ApiModel):
    name: str = Field(min_length=1, max_length=64)
    call_template: CallTemplate = Field(default_factory=CallTemplate)


class AgentUpdate(ApiModel):
    """PATCH: `name` and/or the `callTemplate` fields given (each one replaces the stored value)."""

    name: str | None = Field(default=None, min_length=1, max_length=64)
    call_template: dict[str, Any] | None = None


class AgentStatistics(ApiModel):
    calls: int


class Agent(ApiModel):
    agent_id: str
    name: str
    created: datetime
    call_template: CallTemplateOut
    statistics: AgentStatistics
