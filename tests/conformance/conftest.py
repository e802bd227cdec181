"""The providers under test: each one's fake carrier, credentials and way of placing a call.

Every test in this package runs once per provider against one real server; what differs between
providers lives here, so the tests themselves read the same for all four.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.simulator.carrier import CallReport, CallScript, CarrierWire, FakeCarrier, Progress, StreamSetup
from app.simulator.exotel import ExotelWire, FakeExotel
from app.simulator.plivo import FakePlivo
from app.simulator.telnyx import FakeTelnyx
from app.simulator.twilio import FakeTwilio
from tests.conftest import (
    PLIVO_AUTH_ID,
    PLIVO_AUTH_TOKEN,
    PLIVO_CONFIG,
    TELNYX_CONFIG,
    TELNYX_KEY,
    TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
    TWILIO_CONFIG,
    RunningServer,
    import_config,
)


@dataclass
class ProviderUnderTest:
    """One provider as the conformance tests drive it."""

    name: str
    server: RunningServer
    fake: FakeCarrier | None  # None: the provider sends no webhook (Exotel)
    forger: FakeCarrier | None  # the same provider signing with the wrong secret
    config: dict[str, Any] | None  # the telephony config to import (None: Exotel has none)
    sample_rate: int  # the stream's rate with the default config: the best audio the provider offers

    async def new_stream(self, agent_id: str, script: CallScript | None = None) -> StreamSetup:
        """A call created the provider's way, up to the stream it is told to open."""
        script = script or CallScript(b"")
        if self.fake is not None:
            return await self.fake.answer(agent_id, script)
        async with self.server.api() as api:
            response = await api.post(f"/api/agents/{agent_id}/calls", json={"medium": {"exotel": {}}})
            assert response.status_code == 201, response.text
        return FakeExotel().stream_setup(response.json()["joinUrl"], self.sample_rate)

    def wire(self, setup: StreamSetup) -> CarrierWire:
        if self.fake is not None:
            return self.fake.wire(setup)
        return ExotelWire(setup, "exotelaccount1")

    async def call(
        self,
        agent_id: str,
        script: CallScript,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> CallReport:
        setup = await self.new_stream(agent_id, script)
        if self.fake is not None:
            return await self.fake.run_stream(setup, script, on_progress)
        return await FakeExotel().run_stream(setup, script, on_progress)

    async def webhook(self, agent_id: str, carrier: FakeCarrier, **kwargs: Any) -> httpx.Response:
        params = carrier.incoming_params(CallScript(b""), carrier.new_call_id())
        return await carrier.webhook(agent_id, params, **kwargs)


def _providers(server: RunningServer) -> dict[str, ProviderUnderTest]:
    url = server.base_url
    return {
        "twilio": ProviderUnderTest(
            "twilio",
            server,
            FakeTwilio(url, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN),
            FakeTwilio(url, TWILIO_ACCOUNT_SID, "not-the-real-token"),
            TWILIO_CONFIG,
            8000,
        ),
        "telnyx": ProviderUnderTest(
            "telnyx",
            server,
            FakeTelnyx(url, TELNYX_KEY),
            FakeTelnyx(url, Ed25519PrivateKey.generate()),
            TELNYX_CONFIG,
            16000,
        ),
        "plivo": ProviderUnderTest(
            "plivo",
            server,
            FakePlivo(url, PLIVO_AUTH_ID, PLIVO_AUTH_TOKEN),
            FakePlivo(url, PLIVO_AUTH_ID, "not-the-real-token"),
            PLIVO_CONFIG,
            16000,
        ),
        "exotel": ProviderUnderTest("exotel", server, None, None, None, 16000),
    }


async def provider_named(server: RunningServer, name: str) -> ProviderUnderTest:
    """The provider `name`, its credentials imported on the server."""
    chosen = _providers(server)[name]
    if chosen.config is not None:
        await import_config(server, chosen.name, chosen.config)
    return chosen


@pytest.fixture(params=["twilio", "telnyx", "plivo", "exotel"])
async def provider(request: pytest.FixtureRequest, server: RunningServer) -> ProviderUnderTest:
    return await provider_named(server, request.param)


@pytest.fixture
def signing_provider(provider: ProviderUnderTest) -> ProviderUnderTest:
    """The provider, for the tests about signed webhooks (Exotel signs nothing)."""
    if provider.fake is None:
        pytest.skip(f"{provider.name} sends no signed webhook")
    return provider
