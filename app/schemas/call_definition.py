"""What a call is, as stored with it: everything its session needs, fixed when the call was created."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class CallDefinition(BaseModel):
    """A call's rendered template and medium (the `definition` column; camelCase JSON as stored).

    Nested settings stay in their public JSON shape (`firstSpeakerSettings`, `inactivityMessages`, the
    medium and the pipeline spec): they were validated by the public models when the call was created.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    system_prompt: str = ""
    language_hint: str | None = None
    first_speaker_settings: dict[str, Any] = Field(default_factory=lambda: {"agent": {}})
    inactivity_messages: list[dict[str, Any]] = Field(default_factory=list)
    join_timeout: float
    max_duration: float
    #: The agent pipeline's spec (`{"echo": {}}`, `{"websocket": {...}}`...), secrets as stored.
    pipeline: dict[str, Any] = Field(default_factory=lambda: {"echo": {}})
    template_context: dict[str, Any] = Field(default_factory=dict)
    request_context: dict[str, Any] | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    #: `{joined?, ended?, billed?}`, each `{url, secrets}`, secrets sealed (app.webhooks.callbacks).
    callbacks: dict[str, Any] | None = None
    #: The public medium, `{kind: options}`.
    medium: dict[str, Any] = Field(default_factory=dict)
    #: The provider's stream options chosen by its telephony config (codec, byte order), for the framing.
    stream_options: dict[str, Any] = Field(default_factory=dict)
    #: Of the creating request, to refuse an Idempotency-Key reused for another request.
    request_fingerprint: str | None = None

    def medium_options(self, kind: str) -> dict[str, Any]:
        """The options of the call's medium (`{}` when it has none)."""
        options = self.medium.get(kind)
        return options if isinstance(options, dict) else {}

    def to_stored(self) -> dict[str, Any]:
        """The JSON stored in the `definition` column."""
        return self.model_dump(mode="json", by_alias=True)
