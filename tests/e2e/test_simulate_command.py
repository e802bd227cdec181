"""`callbridge simulate <provider>` places a call against a running server and prints its report."""

from __future__ import annotations

import asyncio
import sys
import wave
from pathlib import Path

import pytest

from app.simulator.twilio import FakeTwilio
from tests.conftest import (
    API_KEY,
    PLIVO_AUTH_ID,
    PLIVO_AUTH_TOKEN,
    TWILIO_AUTH_TOKEN,
    RunningServer,
    import_config,
)

pytestmark = pytest.mark.e2e


async def simulate(
    server: RunningServer, agent: str, account_sid: str, token: str, *args: str
) -> tuple[int, str, str]:
    """Run `callbridge simulate twilio`: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "simulate", "twilio", "--agent", agent, "--url", server.base_url,
        "--account-sid", account_sid, "--auth-token", token, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, stdout.decode(), stderr.decode()


async def test_simulate_prints_a_report_and_writes_what_the_caller_heard(
    server: RunningServer, twilio: FakeTwilio, make_agent, tmp_path: Path
) -> None:
    out = tmp_path / "heard.wav"
    code, report, progress = await simulate(
        server, await make_agent(), twilio.account_sid, TWILIO_AUTH_TOKEN,
        "--dtmf", "1", "--tail", "0.5", "--out", str(out),
    )  # fmt: skip
    assert code == 0, progress
    assert "round trip: lag" in report and "correlation 1.000" in report
    assert "received" in progress  # the progress display
    with wave.open(str(out)) as wav:
        assert (wav.getframerate(), wav.getnchannels()) == (8000, 1) and wav.getnframes() > 8000


async def test_simulate_says_why_when_the_call_is_refused(
    server: RunningServer, twilio: FakeTwilio, make_agent
) -> None:
    code, _, errors = await simulate(server, await make_agent(), twilio.account_sid, "wrong-token")
    assert code == 1
    assert "callbridge refused the call: webhook answered 403" in errors


async def run_cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "simulate", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, stdout.decode(), stderr.decode()


async def test_simulate_plivo_uses_the_given_credentials(server: RunningServer, make_agent) -> None:
    config = {"authId": PLIVO_AUTH_ID, "authToken": PLIVO_AUTH_TOKEN}
    await import_config(server, "plivo", config)
    code, report, errors = await run_cli(
        "plivo", "--agent", await make_agent(), "--url", server.base_url,
        "--auth-id", PLIVO_AUTH_ID, "--auth-token", PLIVO_AUTH_TOKEN, "--tail", "0.5",
    )  # fmt: skip
    assert code == 0, errors
    assert "L16 16000 Hz" in report and "correlation 1.000" in report


async def test_simulate_telnyx_explains_how_to_import_its_key(
    server: RunningServer, make_agent, tmp_path: Path
) -> None:
    key = tmp_path / "telnyx.key"
    code, _, errors = await run_cli(
        "telnyx", "--agent", await make_agent(), "--url", server.base_url, "--signing-key", str(key)
    )
    assert code == 2 and "publicKey" in errors and key.exists()


async def test_simulate_exotel_creates_the_call_and_streams_to_its_join_url(
    server: RunningServer, make_agent
) -> None:
    code, report, errors = await run_cli(
        "exotel", "--agent", await make_agent(), "--url", server.base_url, "--api-key", API_KEY,
        "--sample-rate", "16000", "--tail", "0.5",
    )  # fmt: skip
    assert code == 0, errors
    assert "exotel call" in report and "L16 16000 Hz" in report
