"""`POST /api/calls/{callId}/send_data_message`: messages that act on a live call."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from app.media.dtmf import MIN_GAP_MS, MIN_TONE_MS, valid_dtmf_digits
from app.schemas.base import ApiModel
from app.schemas.durations import Duration
from app.sip.custom_headers import REFER_HEADERS, check_custom_headers

_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_SIP_URI = re.compile(r"^sips?:[^\s@<>]+@[^\s<>]+$")


def valid_transfer_target(target: str) -> str:
    """An E.164 number (`+14155550100`) or a SIP URI (`sip:desk@pbx.example.com`)."""
    target = target.strip()
    if _E164.match(target) or _SIP_URI.match(target):
        return target
    raise ValueError(f"transfer target {target!r} must be an E.164 number (+14155550100) or a sip: URI")


#: `sipVerb`: REFER hands the caller to the target; INVITE bridges a second leg to it (SIP calls only).
SIP_VERBS = ("REFER", "INVITE")


def valid_transfer_headers(headers: dict[str, str]) -> dict[str, str]:
    """`extraHeaders` of a transfer: headers callbridge may put on the REFER or the INVITE."""
    return check_custom_headers(headers, "extraHeaders", REFER_HEADERS)


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
    #: SIP calls: REFER (the far end calls the target) or INVITE (callbridge bridges a second leg).
    sip_verb: Literal["REFER", "INVITE"] = "REFER"
    #: SIP calls: headers added to the REFER or the INVITE.
    extra_headers: Annotated[dict[str, str], AfterValidator(valid_transfer_headers)] = Field(
        default_factory=dict
    )
    #: SIP calls: a refused REFER (405, 501, 603...) is retried as a bridge.
    fallback_to_bridge: bool = False


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
