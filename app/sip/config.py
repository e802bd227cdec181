"""The account SIP config at run time: its domain, and the policy incoming INVITEs are checked against."""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlsplit

from app.schemas.sip import SipConfigFields
from app.settings import Settings
from app.sip.routing import SipPolicy
from app.store.repositories import SipConfigRepository

#: How old the cached policy may get before `fresh` reads the store again (another instance's PATCH).
POLICY_MAX_AGE_S = 5.0


def sip_domain(settings: Settings) -> str:
    """CALLBRIDGE_SIP_DOMAIN, else the public URL's host (which is the listen host when no URL is set)."""
    return settings.sip_domain or urlsplit(settings.base_url).hostname or settings.host


class SipPolicyStore:
    """The stored SIP config and the SipPolicy built from it, cached.

    `load` at startup; `update` stores a new config and refreshes the cache at once; `fresh` re-reads the
    store when the cache is older than `max_age_s`, so a PATCH made on another instance applies here too.
    """

    def __init__(
        self,
        repository: SipConfigRepository,
        max_age_s: float = POLICY_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repository = repository
        self.max_age_s = max_age_s
        self.clock = clock
        self._policy = SipPolicy()  # allows nothing until loaded
        self._loaded_at: float | None = None

    def current(self) -> SipPolicy:
        """The cached policy (nothing allowed before the first `load`)."""
        return self._policy

    async def load(self) -> SipConfigFields:
        """Read the stored config and rebuild the policy from it; returns the config."""
        config = await self.repository.get()
        self._cache(config)
        return config

    async def fresh(self) -> SipPolicy:
        """The policy, re-read from the store first when the cached one is older than `max_age_s`."""
        if self._loaded_at is None or self.clock() - self._loaded_at >= self.max_age_s:
            await self.load()
        return self._policy

    async def update(self, config: SipConfigFields) -> SipConfigFields:
        """Store `config` and apply it at once."""
        stored = await self.repository.update(config)
        self._cache(stored)
        return stored

    def _cache(self, config: SipConfigFields) -> None:
        self._policy = SipPolicy.from_config(config)
        self._loaded_at = self.clock()
