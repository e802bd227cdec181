"""Telephony providers: one module each, behind the interface in `base`."""

from __future__ import annotations

from collections.abc import Mapping

from app.providers.base import Provider
from app.providers.twilio import TwilioProvider

PROVIDERS: dict[str, Provider] = {p.name: p for p in (TwilioProvider(),)}


def get_provider(name: str) -> Provider | None:
    """The provider called `name`, or None when callbridge has no such provider."""
    return PROVIDERS.get(name)


def provider_signing(headers: Mapping[str, str]) -> Provider | None:
    """The provider whose signature header the request carries, if any."""
    return next((p for p in PROVIDERS.values() if p.signature_header in headers), None)
