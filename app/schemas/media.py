"""Call media (`medium`), first-speaker settings and pipeline choice."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from app.schemas.base import ApiModel
from app.schemas.durations import Duration, PositiveDuration
from app.schemas.webhooks import Callbacks


class Outgoing(ApiModel):
    to: str
    from_: str = Field(alias="from")
    additional_params: dict[str, Any] = Field(default_factory=dict)


class DtmfUserTextMessage(ApiModel):
    text: str
    urgency: str | None = None


class DtmfHandling(ApiModel):
    ignore: bool | None = None
    user_text_message: DtmfUserTextMessage | None = None


class ProviderMedium(ApiModel):
    """`twilio`, `telnyx` or `plivo`: an incoming call (no `outgoing`) or a call to dial."""

    outgoing: Outgoing | None = None
    dtmf_handling: DtmfHandling | None = None


class ExotelMedium(ApiModel):
    dtmf_handling: DtmfHandling | None = None


#: serverWebSocket PCM rates: multiples of 8 kHz, which the resampler converts cheaply (44.1 kHz would
#: cost milliseconds of CPU per 20 ms frame).
ServerSampleRate = Literal[8000, 12000, 16000, 24000, 32000, 48000]


class ServerWebSocketMedium(ApiModel):
    input_sample_rate: ServerSampleRate
    output_sample_rate: ServerSampleRate | None = None
    client_buffer_size_ms: int | None = None
    media_idle_timeout: Duration | None = None


class SipOutgoing(ApiModel):
    """A SIP call to place: `to` a sip: URI (`;transport=tcp|tls` or `sips:` pick the transport), `from` a
    URI or a user name."""

    to: str = Field(max_length=1024)
    from_: str = Field(alias="from", max_length=1024)
    username: str | None = Field(default=None, max_length=256)
    #: Write-only: used to answer the far end's digest challenge; never part of the call's JSON.
    password: str | None = Field(default=None, max_length=256, exclude=True, repr=False)
    #: Extra headers on the INVITE (`X-` ones typically); callbridge's own headers cannot be set.
    headers: dict[str, str] = Field(default_factory=dict)
    #: TLS (`sips:` or `;transport=tls`): check the callee's certificate (system CAs, the URI's host);
    #: false accepts a self-signed one.
    tls_verify: bool = True


class SipMedium(ApiModel):
    incoming: dict[str, Any] | None = None
    outgoing: SipOutgoing | None = None

    @model_validator(mode="after")
    def _one_direction(self) -> SipMedium:
        if (self.incoming is None) == (self.outgoing is None):
            raise ValueError("sip medium needs exactly one of 'incoming' or 'outgoing'")
        return self


class WebRtcMedium(ApiModel):
    """A WebRTC client (a browser) joins: its joinUrl is a WHIP endpoint (RFC 9725) taking an SDP offer."""


class Medium(ApiModel):
    """Exactly one of the variants. The medium decides the framing spoken on the joinUrl."""

    twilio: ProviderMedium | None = None
    telnyx: ProviderMedium | None = None
    plivo: ProviderMedium | None = None
    exotel: ExotelMedium | None = None
    server_web_socket: ServerWebSocketMedium | None = None
    sip: SipMedium | None = None
    web_rtc: WebRtcMedium | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Medium:
        fields = type(self).model_fields
        if sum(getattr(self, name) is not None for name in fields) != 1:
            names = ", ".join(info.alias or name for name, info in fields.items())
            raise ValueError(f"medium must set exactly one of: {names}")
        return self

    @property
    def kind(self) -> str:
        """The variant's JSON name: `twilio`, `serverWebSocket`, ..."""
        for name, info in type(self).model_fields.items():
            if getattr(self, name) is not None:
                return info.alias or name
        raise AssertionError("validated medium has a variant")

    @property
    def options(self) -> dict[str, Any]:
        """The chosen variant's own fields."""
        return self.to_json()[self.kind]


class AgentFirst(ApiModel):
    uninterruptible: bool = False
    text: str | None = None
    prompt: str | None = None
    delay: Duration | None = None


class UserFallback(ApiModel):
    delay: Duration
    text: str | None = None
    prompt: str | None = None


class UserFirst(ApiModel):
    fallback: UserFallback | None = None


class FirstSpeakerSettings(ApiModel):
    """Exactly one of `agent` / `user`. Default: the agent speaks first."""

    agent: AgentFirst | None = None
    user: UserFirst | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> FirstSpeakerSettings:
        if (self.agent is None) == (self.user is None):
            raise ValueError("firstSpeakerSettings needs exactly one of 'agent' or 'user'")
        return self


EndBehavior = Literal["END_BEHAVIOR_UNSPECIFIED", "END_BEHAVIOR_HANG_UP_SOFT", "END_BEHAVIOR_HANG_UP_STRICT"]


class InactivityMessage(ApiModel):
    """Said after `duration` with nobody speaking (counted from the previous message); then `endBehavior`.

    SOFT hangs up after the message unless the caller answers it; STRICT always hangs up after it.
    """

    duration: PositiveDuration
    message: str = Field(max_length=2000)
    end_behavior: EndBehavior = "END_BEHAVIOR_UNSPECIFIED"


def default_first_speaker() -> FirstSpeakerSettings:
    return FirstSpeakerSettings(agent=AgentFirst())


def validate_pipeline_spec(value: Any) -> dict[str, Any]:
    """`{"echo": {...}}`: one known backend and options its model accepts (normalised to camelCase)."""
    from app.pipeline import BACKENDS

    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(f"pipeline must be an object with exactly one of: {', '.join(BACKENDS)}")
    ((name, options),) = value.items()
    if name not in BACKENDS:
        raise ValueError(f"unknown pipeline {name!r}; known: {', '.join(BACKENDS)}")
    if options is None:
        options = {}
    model = BACKENDS[name][0].model_validate(options)
    return {name: model.model_dump(mode="json", by_alias=True, exclude_defaults=True)}


PipelineSpec = Annotated[dict[str, Any], BeforeValidator(validate_pipeline_spec)]


def default_pipeline() -> dict[str, Any]:
    return {"echo": {}}


class CallSettings(ApiModel):
    """What every call is made of, whether an agent's template gives it or `POST /api/calls` does."""

    system_prompt: str = ""
    language_hint: str | None = Field(default=None, max_length=16)
    first_speaker_settings: FirstSpeakerSettings = Field(default_factory=default_first_speaker)
    inactivity_messages: list[InactivityMessage] = Field(default_factory=list, max_length=10)
    join_timeout: PositiveDuration = 30.0
    max_duration: PositiveDuration = 3600.0
    medium: Medium | None = None
    pipeline: PipelineSpec = Field(default_factory=default_pipeline)
    #: Where the call's own joined/ended/billed events are POSTed (signed like webhooks).
    callbacks: Callbacks | None = None
