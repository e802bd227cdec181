"""What the SIP fallback handler answers (Ultravox's SipFallbackHandlerResponse): exactly one of
`startAgentCall` (an agent call's overrides plus `agentId`), `startCall` (a call like `POST /api/calls`)
or `reject` (`sipRejectCode` 400..699, default 603, and an optional `message`)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from app.schemas.base import ApiModel
from app.schemas.calls import StartAgentCallRequest, StartCallRequest

DEFAULT_REJECT_CODE = 603


class StartAgentCall(StartAgentCallRequest):
    """Answer the INVITE with a call from this agent's template (and these overrides)."""

    agent_id: str = Field(min_length=1, max_length=36)


class RejectCall(ApiModel):
    """Refuse the INVITE with this final response."""

    sip_reject_code: int = Field(default=DEFAULT_REJECT_CODE, ge=400, le=699)
    #: The response's reason phrase (the status's standard one when absent).
    message: str | None = Field(default=None, max_length=120, pattern=r"^[^\r\n]*$")


class FallbackAnswer(ApiModel):
    """The handler's decision. A medium is refused: the call's medium is the SIP call being answered."""

    start_agent_call: StartAgentCall | None = None
    start_call: StartCallRequest | None = None
    reject: RejectCall | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> FallbackAnswer:
        given = [name for name in ("start_agent_call", "start_call", "reject") if getattr(self, name)]
        if len(given) != 1:
            raise PydanticCustomError(
                "not_one_answer",
                "the answer must hold exactly one of startAgentCall, startCall, reject (it held {count})",
                {"count": len(given)},
            )
        for call in (self.start_agent_call, self.start_call):
            if call is not None and call.medium is not None:
                raise PydanticCustomError(
                    "medium_given", "medium cannot be set: the call's medium is the SIP call being answered"
                )
        return self
