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


async def test_simulate_prints_a_report_and_writes_what_the_caller_heard(
    server: RunningServer, twilio: FakeTwilio, make_agent, tmp_path: Path
) -> None:
    agent = await make_agent()
    out = tmp_path / "heard.wav"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "simulate",
        "twilio",
        "--agent",
        agent,
        "--url",
        server.base_url,
        "--account-sid",
        twilio.account_sid,
        "--auth-token",
        TWILIO_AUTH_TOKEN,
        "--dtmf",
        "1",
        "--tail",
        "0.5",
        "--out",
        str(out),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    report = stdout.decode()
    assert process.returncode == 0, stderr.decode()
    assert "round trip: lag" in report and "correlation 1.000" in report
    assert "received" in stderr.decode()  # the progress display
    with wave.open(str(out)) as wav:
        assert (wav.getframerate(), wav.getnchannels()) == (8000, 1) and wav.getnframes() > 8000


async def test_simulate_says_why_when_the_call_is_refused(
    server: RunningServer, twilio: FakeTwilio, make_agent
) -> None:
    agent = await make_agent()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "simulate",
        "twilio",
        "--agent",
        agent,
        "--url",
        server.base_url,
        "--account-sid",
        twilio.account_sid,
        "--auth-token",
        "wrong-token",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    assert "callbridge refused the call: webhook answered 403" in stderr.decode()
