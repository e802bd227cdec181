"""`callbridge simulate <provider>` places a call against a running server and prints its report."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import tempfile
import wave
from pathlib import Path
from typing import Any

import pytest

from app.simulator.twilio import FakeTwilio
from tests.conftest import (
    API_KEY,
    PLIVO_AUTH_ID,
    PLIVO_AUTH_TOKEN,
    TWILIO_AUTH_TOKEN,
    RunningServer,
)

pytestmark = pytest.mark.e2e


async def run_cli(*args: str, server: RunningServer | None = None) -> tuple[int, str, str]:
    """`callbridge simulate ARGS` in a subprocess: (exit code, stdout, stderr). It reads the configs imported
    on `server` (its data dir), and no `.env`: it runs from an empty directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")}
    if server is not None:
        env["CALLBRIDGE_DATA_DIR"] = str(server.data_dir)
    with tempfile.TemporaryDirectory() as empty:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app.cli", "simulate", *args, cwd=empty, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, stdout.decode(), stderr.decode()


async def simulate(
    server: RunningServer, agent: str, account_sid: str, token: str, *args: str, url: str | None = None
) -> tuple[int, str, str]:
    """Run `callbridge simulate twilio` against `server` (or `url`): (exit code, stdout, stderr)."""
    return await run_cli(
        "twilio", "--agent", agent, "--url", url or server.base_url,
        "--account-sid", account_sid, "--auth-token", token, *args, server=server,
    )  # fmt: skip


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


async def test_simulate_calling_another_url_than_the_public_url_says_the_signature_is_checked_against_it(
    server: RunningServer, twilio: FakeTwilio, make_agent
) -> None:
    # The server's CALLBRIDGE_PUBLIC_URL is http://127.0.0.1:PORT; the same server called as localhost.
    other_url = server.base_url.replace("127.0.0.1", "localhost")
    code, _, errors = await simulate(
        server, await make_agent(), twilio.account_sid, TWILIO_AUTH_TOKEN, url=other_url
    )
    assert code == 1
    assert f"CALLBRIDGE_PUBLIC_URL, which must be the URL you called ({other_url}" in errors
    assert "Traceback" not in errors


async def test_simulate_with_no_server_listening_prints_one_line_and_no_traceback() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        code, _, errors = await run_cli(
            "twilio", "--agent", "a", "--url", url, "--account-sid", "AC1", "--auth-token", "t"
        )
    assert code == 1
    assert errors.splitlines()[-1] == (
        f"callbridge: cannot reach the service at {url} (connection refused) — is `callbridge serve` running?"
    )
    assert "Traceback" not in errors


async def test_simulate_plivo_uses_the_given_credentials(
    server: RunningServer, telephony_configs: dict[str, dict[str, Any]], make_agent
) -> None:
    code, report, errors = await run_cli(
        "plivo", "--agent", await make_agent(), "--url", server.base_url,
        "--auth-id", PLIVO_AUTH_ID, "--auth-token", PLIVO_AUTH_TOKEN, "--tail", "0.5", server=server,
    )  # fmt: skip
    assert code == 0, errors
    assert "L16 16000 Hz" in report and "correlation 1.000" in report


async def test_simulate_telnyx_explains_how_to_import_its_key(
    server: RunningServer, make_agent, tmp_path: Path
) -> None:
    key = tmp_path / "telnyx.key"
    code, _, errors = await run_cli(
        "telnyx",
        "--agent",
        await make_agent(),
        "--url",
        server.base_url,
        "--signing-key",
        str(key),
        server=server,
    )
    assert code == 2 and "publicKey" in errors and key.exists()


async def test_simulate_exotel_creates_the_call_and_streams_to_its_join_url(
    server: RunningServer, make_agent
) -> None:
    code, report, errors = await run_cli(
        "exotel", "--agent", await make_agent(), "--url", server.base_url, "--api-key", API_KEY,
        "--sample-rate", "16000", "--tail", "0.5", server=server,
    )  # fmt: skip
    assert code == 0, errors
    assert "exotel call" in report and "L16 16000 Hz" in report
