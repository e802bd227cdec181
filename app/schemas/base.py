"""Base model for the public JSON: camelCase on the wire, unknown fields rejected."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """A public JSON object. Python names are snake_case; JSON names are camelCase."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", serialize_by_alias=True
    )

    def to_json(self) -> dict[str, Any]:
        """The JSON-ready dict, by alias, without unset optional noise."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
