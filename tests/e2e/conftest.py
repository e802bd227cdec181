"""End-to-end fixtures: a real server with credentials imported, a fake Twilio to call it, and fake provider
REST APIs for the calls it dials."""

from __future__ import annotations

from collections.abc import AsyncIterator

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
    import_config,
)


@pytest.fixture(scope="session")
async def twilio(server: RunningServer) -> FakeTwilio:
    await import_config(server, "twilio", TWILIO_CONFIG)
    return FakeTwilio(server.base_url, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)


#: The TeXML application outgoing Telnyx calls are placed through.
TELNYX_APPLICATION_SID = "1684641123236054244"


@pytest.fixture(scope="session")
async def provider_apis(server: RunningServer) -> AsyncIterator[dict[str, FakeProviderApi]]:
    """Fake Twilio, Telnyx and Plivo REST APIs, each imported on the server as its config's apiBaseUrl."""
    apis: dict[str, FakeProviderApi] = {
        "twilio": FakeTwilioApi(TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN),
        "telnyx": FakeTelnyxApi(TELNYX_API_KEY, TELNYX_KEY, account_sid=TELNYX_ACCOUNT_SID),
        "plivo": FakePlivoApi(PLIVO_AUTH_ID, PLIVO_AUTH_TOKEN),
    }
    configs = {"twilio": TWILIO_CONFIG, "telnyx": TELNYX_CONFIG, "plivo": PLIVO_CONFIG}
    async with server.api() as api:
        for name, fake in apis.items():
            await fake.start()
            await import_config(server, name, configs[name])
            patch: dict[str, str] = {"apiBaseUrl": fake.base_url}
            if name == "telnyx":
                patch["applicationSid"] = TELNYX_APPLICATION_SID
            response = await api.patch(f"/api/telephony_configs/{name}", json=patch)
            assert response.status_code == 200, response.text
    yield apis
    for fake in apis.values():
        await fake.stop()
