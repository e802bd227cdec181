"""SIGTERM drains a real `callbridge serve`: readiness 503 and new calls refused at once, live calls given
CALLBRIDGE_DRAIN_TIMEOUT to end (then ended `system_error` and their provider legs hung up), exit 0."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.simulator.audio import speech_like
from app.simulator.carrier import CallScript
from app.simulator.provider_api import FakeCall
from app.simulator.twilio import FakeTwilio
from app.simulator.twilio_api import FakeTwilioApi
from tests.conftest import (
    TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
    TWILIO_CONFIG,
    RunningServer,
    import_config,
    run_server,
    wait_for,
)

pytestmark = pytest.mark.e2e

DRAIN_TIMEOUT_S = 3.0


@dataclass
class Draining:
    server: RunningServer
    workdir: Path
    api: FakeTwilioApi
    agent_id: str


@pytest.fixture
async def draining(tmp_path: Path) -> AsyncIterator[Draining]:
    """A server of its own (it is stopped by the test), dialling through a fake Twilio REST API."""
    api = FakeTwilioApi(TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)
    await api.start()
    try:
        with run_server(tmp_path, CALLBRIDGE_DRAIN_TIMEOUT=str(DRAIN_TIMEOUT_S)) as server:
            await import_config(server, "twilio", {**TWILIO_CONFIG, "apiBaseUrl": api.base_url})
            async with server.api() as client:
                agent = await client.post("/api/agents", json={"name": "d", "callTemplate": {}})
            yield Draining(server, tmp_path, api, agent.json()["agentId"])
    finally:
        await api.stop()


async def live_call(setup: Draining, callee: CallScript) -> tuple[str, FakeCall]:
    """An outgoing call, answered by the fake callee and joined."""
    setup.api.callee = callee
    body = {"medium": {"twilio": {"outgoing": {"to": "+15550001111", "from": "+15550002222"}}}}
    async with setup.server.api() as client:
        created = await client.post(f"/api/agents/{setup.agent_id}/calls", json=body)
    assert created.status_code == 201, created.text
    call_id = created.json()["callId"]

    async def joined() -> bool:
        async with setup.server.api() as client:
            return bool((await client.get(f"/api/calls/{call_id}")).json()["joined"])

    await wait_for(joined)
    return call_id, await setup.api.wait_for_call()


async def exit_code(process: subprocess.Popen[bytes]) -> int:
    """The server's exit status (waited for in a thread: the fake provider API runs on this loop)."""
    return await asyncio.to_thread(process.wait, DRAIN_TIMEOUT_S + 20)


def stored_call(workdir: Path, call_id: str) -> tuple[str, str]:
    """(endReason, the `ended` event's text) as the stopped server left them in its database."""
    with sqlite3.connect(workdir / "data" / "callbridge.db") as db:
        (reason,) = db.execute("SELECT end_reason FROM calls WHERE id = ?", (call_id,)).fetchone()
        (text,) = db.execute(
            "SELECT text FROM call_events WHERE call_id = ? AND type = 'ended'", (call_id,)
        ).fetchone()
    return reason, text


async def test_sigterm_refuses_new_calls_then_ends_live_ones_after_the_drain_timeout(
    draining: Draining,
) -> None:
    server = draining.server
    call_id, leg = await live_call(draining, CallScript(audio=speech_like(60.0, 8000)))
    server.process.send_signal(signal.SIGTERM)
    async with httpx.AsyncClient(base_url=server.base_url) as client:

        async def not_ready() -> bool:
            return (await client.get("/readyz")).status_code == 503

        await wait_for(not_ready)
        await import_config(server, "twilio", TWILIO_CONFIG)  # the API still answers
        twilio = FakeTwilio(server.base_url, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)
        webhook = await twilio.voice_webhook(
            draining.agent_id, twilio.incoming_params(CallScript(b""), twilio.new_call_id())
        )
        assert webhook.status_code == 200
        assert [child.tag for child in ET.fromstring(webhook.text)] == ["Hangup"]
        async with server.api() as api:
            refused = await api.post("/api/calls", json={})
            assert refused.status_code == 503 and refused.json()["code"] == "draining"
            assert (await api.get(f"/api/calls/{call_id}")).json()["ended"] is None  # still live
            assert (await api.get("/api/calls")).json()["total"] == 1  # the webhook made no call
    assert await exit_code(server.process) == 0
    reason, text = stored_call(draining.workdir, call_id)
    assert reason == "system_error" and "shut down" in text
    hang_ups = [
        r for r in draining.api.requests if leg.sid in r.path and r.params.get("Status") == "completed"
    ]
    assert hang_ups, "callbridge did not ask Twilio to hang the leg up"


async def test_a_live_call_that_ends_during_the_drain_ends_as_it_would_and_the_server_exits(
    draining: Draining,
) -> None:
    server = draining.server
    call_id, leg = await live_call(draining, CallScript(audio=speech_like(1.0, 8000), tail_seconds=0.5))
    server.process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(leg.ended.wait(), 10)
    assert await exit_code(server.process) == 0
    reason, _ = stored_call(draining.workdir, call_id)
    assert reason == "hangup" and leg.ended_by == "callee"
