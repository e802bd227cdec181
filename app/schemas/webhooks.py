"""Account webhooks (`/api/webhooks`) and per-call `callbacks`, Ultravox-shaped (reference §7).

Errors with their own code are `PydanticCustomError`s whose type is that code (`WEBHOOK_ERROR_CODES`), so
the API answers with it. Webhook secrets are returned by GET (as Ultravox does); a call's callback secrets
are write-only: a Call shows their `secretPrefixes`.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from app.pipeline.secret_options import SealedSecret, shown_prefix
from app.schemas.base import ApiModel

MAX_URL_LENGTH = 200
MAX_SECRET_LENGTH = 120
MAX_SECRETS = 10
#: Failed deliveries a webhook remembers (`recentFailures`).
RECENT_FAILURES = 10
#: Validation error types that are also the response's `code`.
WEBHOOK_ERROR_CODES = frozenset({"invalid_url", "invalid_events", "invalid_secret"})


class WebhookEvent(StrEnum):
    STARTED = "call.started"
    JOINED = "call.joined"
    ENDED = "call.ended"
    BILLED = "call.billed"


class WebhookStatus(StrEnum):
    NORMAL = "normal"
    UNHEALTHY = "unhealthy"


_URL = re.compile(r"^https?://[^\s/?#]+\S*$")


def _http_url(value: str) -> str:
    if len(value) > MAX_URL_LENGTH:
        raise PydanticCustomError(
            "invalid_url", "url is {length} characters; at most {limit}", {"length": len(value), "limit": 200}
        )
    if not _URL.match(value):
        raise PydanticCustomError("invalid_url", "url must be an http:// or https:// URL")
    return value


def _events(value: list[str]) -> list[WebhookEvent]:
    if not value:
        raise PydanticCustomError("invalid_events", "events must name at least one event")
    known = [event.value for event in WebhookEvent]
    for name in value:
        if name not in known:
            raise PydanticCustomError(
                "invalid_events",
                "unknown event {name}; known: {known}",
                {"name": repr(name), "known": ", ".join(known)},
            )
    return [WebhookEvent(name) for name in dict.fromkeys(value)]


def _secret(value: str) -> str:
    if not 1 <= len(value) <= MAX_SECRET_LENGTH:
        raise PydanticCustomError(
            "invalid_secret", "a secret must be 1 to {limit} characters", {"limit": MAX_SECRET_LENGTH}
        )
    return value


def _secrets(value: list[str]) -> list[str]:
    if len(value) > MAX_SECRETS:
        raise PydanticCustomError("invalid_secret", "at most {limit} secrets", {"limit": MAX_SECRETS})
    return value


WebhookUrl = Annotated[str, AfterValidator(_http_url)]
Secret = Annotated[str, AfterValidator(_secret)]
Secrets = Annotated[list[Secret], AfterValidator(_secrets)]
Events = Annotated[list[str], AfterValidator(_events)]


class WebhookFields(ApiModel):
    """What a webhook's owner sets. Read-only fields are accepted and ignored, so a GET's body can be sent
    back as a PUT."""

    url: WebhookUrl
    events: Events
    agent_id: str | None = Field(default=None, max_length=36)
    secrets: Secrets = Field(default_factory=list, repr=False)

    webhook_id: str | None = Field(default=None, exclude=True)
    created: datetime | None = Field(default=None, exclude=True)
    status: str | None = Field(default=None, exclude=True)
    last_status_change: datetime | None = Field(default=None, exclude=True)
    recent_failures: list[Any] | None = Field(default=None, exclude=True)


class WebhookFailure(ApiModel):
    timestamp: datetime
    failure: str


class Webhook(ApiModel):
    """The response body."""

    webhook_id: str
    created: datetime
    url: str
    events: list[WebhookEvent]
    agent_id: str | None
    secrets: list[str]
    status: WebhookStatus
    last_status_change: datetime | None
    recent_failures: list[WebhookFailure]

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


# --- per-call callbacks ---------------------------------------------------------------------------

CallbackKind = Literal["joined", "ended", "billed"]
#: Which event each callback is sent for.
CALLBACK_EVENTS: dict[str, WebhookEvent] = {
    "joined": WebhookEvent.JOINED,
    "ended": WebhookEvent.ENDED,
    "billed": WebhookEvent.BILLED,
}
#: A callback secret: a string as given to the API, sealed as stored (`app.webhooks.callbacks`).
CallbackSecret = Secret | SealedSecret


class Callback(ApiModel):
    url: WebhookUrl
    secrets: list[CallbackSecret] = Field(default_factory=list, max_length=MAX_SECRETS, repr=False)


class Callbacks(ApiModel):
    """`callbacks` of a call template or a call: where the call's own joined/ended/billed events go."""

    joined: Callback | None = None
    ended: Callback | None = None
    billed: Callback | None = None


def public_callbacks(stored: dict[str, Any] | None) -> dict[str, Any] | None:
    """Callbacks as responses show them: each secret cut to its prefix (`secretPrefixes`)."""
    if stored is None:
        return None
    shown: dict[str, Any] = {}
    for kind, callback in stored.items():
        if callback is None:
            continue
        shown[kind] = {
            "url": callback["url"],
            "secretPrefixes": [shown_prefix(secret) for secret in callback.get("secrets", [])],
        }
    return shown
