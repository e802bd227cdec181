"""`POST /api/calls/{callId}/send_data_message`: messages that act on a live call."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from app.media.dtmf import MIN_GAP_MS, MIN_TONE_MS, valid_dtmf_digits
from app.schemas.base import ApiModel
from app.schemas.durations import Duration

_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_SIP_URI = re.compile(r"^sips?:[^\s@<>]+@[^\s<>]+$")


def valid_transfer_target(target: str) -> str:
    """An E.164 number (`+14155550100`) or a SIP URI (`sip:desk@pbx.example.com`)."""
    target = target.strip()
    if _E164.match(target) or _SIP_URI.match(target):
        return target
    raise ValueError(f"transfer target {target!r} must be an E.164 number (+14155550100) or a sip: URI")


def _digits(value: str) -> str:
    if not value:
        raise ValueError("digits must not be empty")
    return valid_dtmf_digits(value)


class HangUpMessage(ApiModel):
    type: Literal["hang_up"]
    message: str | None = Field(default=None, max_length=2000)


class ColdTransferMessage(ApiModel):
    type: Literal["cold_transfer"]
    target: Annotated[str, AfterValidator(valid_transfer_target)]


class PlayDtmfMessage(ApiModel):
    type: Literal["play_dtmf_sounds"]
    digits: Annotated[str, AfterValidator(_digits)] = Field(max_length=64)
    tone_duration: Duration = Field(default=0.2, ge=MIN_TONE_MS / 1000, le=2.0)
    space_duration: Duration = Field(default=0.1, ge=MIN_GAP_MS / 1000, le=2.0)


class UserTextMessage(ApiModel):
    type: Literal["user_text_message"]
    text: str = Field(min_length=1, max_length=10000)


class ForcedAgentMessage(ApiModel):
    type: Literal["forced_agent_message"]
    content: str = Field(min_length=1, max_length=10000)


DataMessage = Annotated[
    HangUpMessage | ColdTransferMessage | PlayDtmfMessage | UserTextMessage | ForcedAgentMessage,
    Field(discriminator="type"),
]
