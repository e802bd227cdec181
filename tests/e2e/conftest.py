"""End-to-end fixtures: a real server with Twilio credentials imported, and a fake Twilio to call it."""

from __future__ import annotations

import pytest

from app.simulator.twilio import FakeTwilio
from tests.conftest import TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_CONFIG, RunningServer, import_config


@pytest.fixture(scope="session")
async def twilio(server: RunningServer) -> FakeTwilio:
    await import_config(server, "twilio", TWILIO_CONFIG)
    return FakeTwilio(server.base_url, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)
