"""`callbridge simulate twilio` places a call against a running server and prints its report."""

from __future__ import annotations

import asyncio
import sys
import wave
from pathlib import Path

import pytest

from app.simulator.twilio import FakeTwilio
from tests.conftest import TWILIO_AUTH_TOKEN, RunningServer

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
