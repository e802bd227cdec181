"""End-to-end fixtures: a real server of their own with credentials imported once, a fake Twilio to call it,
and fake provider REST APIs for the calls it dials."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from app.simulator.plivo_api import FakePlivoApi
from app.simulator.provider_api import FakeProviderApi
from app.simulator.telnyx_api import FakeTelnyxApi
from app.simulator.twilio import FakeTwilio
from app.simulator.twilio_api import FakeTwilioApi
from tests.conftest import (
    PLIVO_AUTH_ID,
    PLIVO_AUTH_TOKEN,
    PLIVO_CONFIG,
    TELNYX_ACCOUNT_SID,
    TELNYX_API_KEY,
    TELNYX_CONFIG,
    TELNYX_KEY,
    TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
    TWILIO_CONFIG,
    RunningServer,
    fresh_postgres_database,
    run_server,
)


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The end-to-end tests' own real server (SQLite), so their telephony configs are theirs alone."""
    with run_server(tmp_path_factory.mktemp("e2e-server")) as running:
        yield running


#: The TeXML application outgoing Telnyx calls are placed through.
TELNYX_APPLICATION_SID = "1684641123236054244"


@pytest.fixture(scope="package")
async def fake_provider_apis() -> AsyncIterator[dict[str, FakeProviderApi]]:
    """Fake Twilio, Telnyx and Plivo REST APIs on loopback ports (not yet known to the server)."""
    apis: dict[str, FakeProviderApi] = {
        "twilio": FakeTwilioApi(TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN),
        "telnyx": FakeTelnyxApi(TELNYX_API_KEY, TELNYX_KEY, account_sid=TELNYX_ACCOUNT_SID),
        "plivo": FakePlivoApi(PLIVO_AUTH_ID, PLIVO_AUTH_TOKEN),
    }
    for fake in apis.values():
        await fake.start()
    yield apis
    for fake in apis.values():
        await fake.stop()


@pytest.fixture(scope="package")
async def telephony_configs(
    server: RunningServer, fake_provider_apis: dict[str, FakeProviderApi]
) -> dict[str, dict[str, Any]]:
    """Twilio, Telnyx and Plivo imported once on the e2e server, each calling its fake REST API."""
    apis = fake_provider_apis
    configs = {
        "twilio": {**TWILIO_CONFIG, "apiBaseUrl": apis["twilio"].base_url},
        "telnyx": {
            **TELNYX_CONFIG,
            "apiBaseUrl": apis["telnyx"].base_url,
            "applicationSid": TELNYX_APPLICATION_SID,
        },
        "plivo": {**PLIVO_CONFIG, "apiBaseUrl": apis["plivo"].base_url},
    }
    async with server.api() as api:
        for name, config in configs.items():
            body = {**config, "callCreationAllowAllAgents": True}
            response = await api.post(f"/api/telephony_configs/{name}", json=body)
            assert response.status_code == 201, response.text  # a fresh server: nothing to collide with
    return configs


@pytest.fixture(scope="package")
def provider_apis(
    fake_provider_apis: dict[str, FakeProviderApi], telephony_configs: dict[str, dict[str, Any]]
) -> dict[str, FakeProviderApi]:
    """The fake provider REST APIs, each one the apiBaseUrl of its provider's config on the e2e server."""
    return fake_provider_apis


@pytest.fixture(scope="package")
def twilio(server: RunningServer, telephony_configs: dict[str, dict[str, Any]]) -> FakeTwilio:
    """A fake Twilio calling the e2e server with the credentials imported there."""
    return FakeTwilio(server.base_url, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)


@pytest.fixture
async def fresh_postgres_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for several instances (dropped afterwards)."""
    async with fresh_postgres_database() as url:
        yield url
