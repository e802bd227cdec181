"""Telephony providers: one module each, behind the interface in `base`.

Adding a provider means adding its module and one entry here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.providers.base import StreamProvider, WebhookProvider
from app.providers.exotel import ExotelProvider
from app.providers.plivo import PlivoProvider
from app.providers.server_websocket import ServerWebSocketProvider
from app.providers.telnyx import TelnyxProvider
from app.providers.twilio import TwilioProvider

PROVIDERS: dict[str, StreamProvider] = {
    p.name: p
    for p in (
        TwilioProvider(),
        TelnyxProvider(),
        PlivoProvider(),
        ExotelProvider(),
        ServerWebSocketProvider(),
    )
}


def get_provider(name: str) -> StreamProvider | None:
    """The provider called `name`, or None when callbridge has no such provider."""
    return PROVIDERS.get(name)


def webhook_providers() -> list[WebhookProvider[Any]]:
    """The providers that send signed incoming-call webhooks to `telephony_xml`."""
    return [p for p in PROVIDERS.values() if isinstance(p, WebhookProvider)]


def provider_signing(headers: Mapping[str, str]) -> WebhookProvider[Any] | None:
    """The provider whose signature headers (all of them) the request carries, if any."""
    return next(
        (p for p in webhook_providers() if all(h in headers for h in p.signature_headers)),
        None,
    )
