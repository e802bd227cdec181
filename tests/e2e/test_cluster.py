"""Several instances as one service: two real `callbridge serve` processes on one PostgreSQL and one Redis,
dialling through a fake Twilio API. A call's control reaches the instance that holds its stream from the
other; the concurrency limit holds across both; SIGTERM drains one while the other takes new calls;
SIGKILL on one has its calls ended from the other once its lease lapses, their provider legs hung up."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from redis.asyncio import Redis

from app.simulator.audio import speech_like
from app.simulator.carrier import CallScript
from app.simulator.provider_api import FakeCall
from app.simulator.twilio_api import FakeTwilioApi
from tests.cluster.tcp_proxy import CuttableProxy
from tests.conftest import (
    REDIS_URL,
    TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
    TWILIO_CONFIG,
    RunningServer,
    ended,
    events_of,
    import_config,
    require_redis,
    wait_for,
)
from tests.e2e.instances import Instance
from tests.e2e.test_outbound_calls import finished, hung_up, joined, send
from tests.goertzel import detect_dtmf
from tests.live_call import server_events

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

LEASE_S = 2.0
LIMIT = 3
TO, FROM = "+15550003333", "+15550004444"


@dataclass
class Pair:
    """Two instances, A and B, sharing a database and a Redis; calls are dialled through A."""

    a: Instance
    b: Instance
    api: FakeTwilioApi
    agent_id: str
    #: The instances' only way to Redis (cut it: Redis is gone for both).
    redis_link: CuttableProxy
    prefix: str

    @property
    def on_a(self) -> RunningServer:
        assert self.a.server is not None
        return self.a.server

    @property
    def on_b(self) -> RunningServer:
        assert self.b.server is not None
        return self.b.server

    async def dial(self, through: RunningServer) -> httpx.Response:
        body = {"medium": {"twilio": {"outgoing": {"to": TO, "from": FROM}}}}
        async with through.api() as client:
            return await client.post(f"/api/agents/{self.agent_id}/calls", json=body)

    async def live_call_on_a(self, callee: CallScript) -> tuple[str, FakeCall]:
        """A call dialled through A (its stream joins A), answered and joined."""
        self.api.callee = callee
        response = await self.dial(self.on_a)
        assert response.status_code == 201, response.text
        call_id = response.json()["callId"]
        call = await self.api.wait_for_call()
        await joined(self.on_b, call_id)
        return call_id, call


@pytest.fixture
async def pair(tmp_path: Path, fresh_postgres_url: str) -> AsyncIterator[Pair]:
    await require_redis()
    api = FakeTwilioApi(TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)
    await api.start()
    target = urlsplit(REDIS_URL)
    link = CuttableProxy(target.hostname or "127.0.0.1", target.port or 6379)
    await link.start()
    prefix = f"cbtest-{uuid.uuid4().hex[:10]}"
    env = {
        "CALLBRIDGE_DATABASE_URL": fresh_postgres_url,
        "CALLBRIDGE_SECRET_KEY": "cluster-test-secret-key",
        "CALLBRIDGE_REDIS_URL": link.url,
        "CALLBRIDGE_REDIS_PREFIX": prefix,
        "CALLBRIDGE_CLUSTER_LEASE": str(LEASE_S),
        "CALLBRIDGE_MAX_CONCURRENT_CALLS": str(LIMIT),
        "CALLBRIDGE_DRAIN_TIMEOUT": "15",
    }
    a, b = Instance(tmp_path, env, "a"), Instance(tmp_path, env, "b")
    try:
        await a.start()  # first alone: it migrates the database
        await b.start()
        assert a.server is not None
        await import_config(a.server, "twilio", {**TWILIO_CONFIG, "apiBaseUrl": api.base_url})
        async with a.server.api() as client:
            agent = await client.post("/api/agents", json={"name": "cluster", "callTemplate": {}})
        yield Pair(a, b, api, agent.json()["agentId"], link, prefix)
    finally:
        await a.stop()
        await b.stop()
        await link.stop()
        await api.stop()


async def forwarded(server: RunningServer) -> float:
    """How many control requests `server` sent to the instance holding the call (its /metrics)."""
    async with server.api() as client:
        text = (await client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith("callbridge_cluster_control_forwarded_total "):
            return float(line.split()[1])
    raise AssertionError("no callbridge_cluster_control_forwarded_total in /metrics")


def long_callee(seconds: float = 8.0) -> CallScript:
    return CallScript(audio=speech_like(seconds, 8000), tail_seconds=1.0)


async def test_a_hang_up_sent_to_the_other_instance_is_carried_out_by_the_holder(pair: Pair) -> None:
    call_id, call = await pair.live_call_on_a(long_callee())
    assert (await send(pair.on_b, call_id, {"type": "hang_up"})).status_code == 204
    await finished(call)
    assert call.end_status == "completed"
    assert (await ended(pair.on_b, call_id))["endReason"] == "agent_hangup"
    assert await forwarded(pair.on_b) == 1


async def test_dtmf_sent_to_the_other_instance_is_played_into_the_holders_stream(pair: Pair) -> None:
    call_id, call = await pair.live_call_on_a(CallScript(audio=b"", tail_seconds=4.0))
    response = await send(pair.on_b, call_id, {"type": "play_dtmf_sounds", "digits": "47#"})
    assert response.status_code == 204, response.text
    await finished(call)
    assert call.report is not None
    assert detect_dtmf(call.report.played, call.report.audio_format.sample_rate) == "47#"


async def test_a_transfer_sent_to_the_other_instance_reaches_the_provider(pair: Pair) -> None:
    call_id, call = await pair.live_call_on_a(long_callee())
    response = await send(pair.on_b, call_id, {"type": "cold_transfer", "target": "+15557654321"})
    assert response.status_code == 204, response.text
    await finished(call)
    assert call.transfers == ["+15557654321"]
    outcomes = [
        e["extras"].get("outcome") for e in await events_of(pair.on_b, call_id) if e["type"] == "transfer"
    ]
    assert outcomes[-1] == "transferred"


async def test_the_holders_refusal_is_the_answer_of_the_other_instance(pair: Pair) -> None:
    call_id, call = await pair.live_call_on_a(long_callee(3.0))
    response = await send(pair.on_b, call_id, {"type": "user_text_message", "text": "hello"})
    assert response.status_code == 400  # the echo agent takes no text: said by A, answered by B
    assert response.json()["code"] == "unsupported_message"
    await finished(call)


async def test_a_calls_levels_stream_from_the_other_instance_than_the_one_holding_its_media(
    pair: Pair,
) -> None:
    call_id, call = await pair.live_call_on_a(long_callee(3.0))
    async with pair.on_b.api() as api:
        stream = server_events(api, f"/api/calls/{call_id}/events/stream")
        levels = [data async for event, data in stream if event == "levels"]
    await finished(call)
    heard = [level["callerToAgent"] for level in levels if level["available"]]
    echoed = [level["agentToCaller"] for level in levels if level["available"]]
    assert any(dbfs is not None and -40 < dbfs < 0 for dbfs in heard)
    assert any(dbfs is not None and -40 < dbfs < 0 for dbfs in echoed)


async def test_the_concurrency_limit_holds_across_both_instances_under_a_burst(pair: Pair) -> None:
    pair.api.ring_seconds = 10.0  # every call stays up (ringing) while the burst lasts
    try:
        servers = [pair.on_a, pair.on_b] * 4
        responses = await asyncio.gather(*(pair.dial(server) for server in servers))
    finally:
        pair.api.ring_seconds = 0.1
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * LIMIT + [429] * (len(servers) - LIMIT)
    for response in responses:
        if response.status_code == 201:
            await send(pair.on_b, response.json()["callId"], {"type": "hang_up"})


async def test_sigterm_drains_one_instance_while_the_other_takes_new_calls(pair: Pair) -> None:
    call_id, call = await pair.live_call_on_a(long_callee(3.0))
    pair.on_a.process.send_signal(signal.SIGTERM)

    async def a_not_ready() -> bool:
        try:
            async with pair.on_a.api() as client:
                return (await client.get("/readyz")).status_code == 503
        except httpx.HTTPError:
            return False

    await wait_for(a_not_ready)
    pair.api.callee = long_callee(1.0)
    assert (await pair.dial(pair.on_b)).status_code == 201
    await finished(call)
    assert (await ended(pair.on_b, call_id, within=15))["endReason"] == "hangup"  # the callee's own end
    assert await asyncio.to_thread(pair.on_a.process.wait, 30) == 0


async def test_sigkill_has_the_other_instance_end_the_calls_and_hang_up_their_legs(pair: Pair) -> None:
    call_id, call = await pair.live_call_on_a(long_callee(30.0))
    server_b = pair.on_b
    await pair.a.kill()
    done = await ended(server_b, call_id, within=LEASE_S * 4 + 10)
    assert done["endReason"] == "system_error"
    assert await hung_up(pair.api, call)
    assert any("stopped renewing its lease" in e["text"] for e in await events_of(server_b, call_id))


async def test_a_call_id_unknown_to_every_instance_is_refused_as_usual(pair: Pair) -> None:
    response = await send(pair.on_b, "no-such-call", {"type": "hang_up"})
    assert response.status_code == 404


async def ready(server: RunningServer) -> int:
    async with server.api() as client:
        return (await client.get("/readyz")).status_code


async def test_a_redis_outage_ends_no_live_call_and_refuses_new_calls_until_redis_is_back(pair: Pair) -> None:
    call_id, call = await pair.live_call_on_a(long_callee(6.0))
    await pair.redis_link.cut()

    async def refusing() -> bool:
        return await ready(pair.on_a) == 503 and await ready(pair.on_b) == 503

    await wait_for(refusing)
    response = await pair.dial(pair.on_b)
    assert response.status_code == 503 and response.json()["code"] == "cluster_unavailable"
    redis = Redis.from_url(REDIS_URL)
    try:

        async def leases_lapsed() -> bool:  # longer than a lease without Redis
            keys = [k async for k in redis.scan_iter(match=f"{pair.prefix}:instance:*")]
            return not [k for k in keys if k.count(b":") == 2]

        await wait_for(leases_lapsed)
    finally:
        await redis.aclose()
    await pair.redis_link.restore()

    async def taking_calls() -> bool:
        return await ready(pair.on_a) == 200 and await ready(pair.on_b) == 200

    await wait_for(taking_calls)
    await finished(call)
    assert (await ended(pair.on_b, call_id))["endReason"] == "hangup"  # the callee's own end, as scripted
    pair.api.callee = long_callee(1.0)
    assert (await pair.dial(pair.on_b)).status_code == 201
