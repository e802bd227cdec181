"""`callbridge serve --workers 2` on PostgreSQL and Redis: two worker processes on one port, each an
instance of the cluster; a call placed through the port is controlled through it, whichever worker each
request reaches; SIGTERM on the supervisor drains both and exits 0."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path

import pytest
from redis.asyncio import Redis

from app.simulator.audio import speech_like
from app.simulator.carrier import CallScript
from app.simulator.twilio_api import FakeTwilioApi
from tests.conftest import (
    REDIS_URL,
    TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
    TWILIO_CONFIG,
    ended,
    import_config,
    require_redis,
    run_server,
    wait_for,
)
from tests.e2e.test_outbound_calls import finished, joined, send

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


async def test_two_workers_serve_one_port_as_two_instances_and_drain_on_sigterm(
    tmp_path: Path, fresh_postgres_url: str
) -> None:
    await require_redis()
    prefix = f"cbtest-{uuid.uuid4().hex[:10]}"
    env = {
        "CALLBRIDGE_DATABASE_URL": fresh_postgres_url,
        "CALLBRIDGE_SECRET_KEY": "workers-test-secret-key",
        "CALLBRIDGE_REDIS_URL": REDIS_URL,
        "CALLBRIDGE_REDIS_PREFIX": prefix,
    }
    api = FakeTwilioApi(TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)
    await api.start()
    redis = Redis.from_url(REDIS_URL)
    context = run_server(tmp_path, serve_args=("--workers", "2"), **env)
    try:
        server = await asyncio.to_thread(context.__enter__)

        async def both_joined() -> bool:
            return await redis.scard(f"{prefix}:instances") == 2

        await wait_for(both_joined)
        await import_config(server, "twilio", {**TWILIO_CONFIG, "apiBaseUrl": api.base_url})
        async with server.api() as client:
            agent = (await client.post("/api/agents", json={"name": "w", "callTemplate": {}})).json()
            api.callee = CallScript(audio=speech_like(8.0, 8000), tail_seconds=1.0)
            body = {"medium": {"twilio": {"outgoing": {"to": "+15550005555", "from": "+15550006666"}}}}
            created = await client.post(f"/api/agents/{agent['agentId']}/calls", json=body)
        assert created.status_code == 201, created.text
        call_id = created.json()["callId"]
        call = await api.wait_for_call()
        await joined(server, call_id)
        for _ in range(10):  # a new connection each time: the kernel picks the worker that accepts it
            response = await send(server, call_id, {"type": "play_dtmf_sounds", "digits": "1"})
            assert response.status_code == 204, response.text
        assert (await send(server, call_id, {"type": "hang_up"})).status_code == 204
        await finished(call)
        assert (await ended(server, call_id))["endReason"] == "agent_hangup"

        server.process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.process.wait, 30) == 0

        async def both_left() -> bool:
            return await redis.scard(f"{prefix}:instances") == 0

        await wait_for(both_left)
    finally:
        await asyncio.to_thread(context.__exit__, None, None, None)
        await redis.aclose()
        await api.stop()
