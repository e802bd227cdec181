"""Control across instances: the round trip of a data message to a call whose stream another instance holds.

Two real `callbridge serve` instances, A and B, on one scratch PostgreSQL database and one Redis; a call is
dialled through A (a fake Twilio API answers it and streams to A). Then, one request at a time over a
kept-alive connection, `send_data_message` with a `user_text_message` (which the echo agent refuses: a full
round trip through the holder with no side effect) is sent to A (acted on locally) and to B (forwarded to A
over Redis pub/sub, answered back). Also the bus alone: two RedisCluster objects in this process, `forward`
to a handler that answers at once.

    .venv/bin/python bench/cluster_control.py [--requests 500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
import uuid

import bench_frames as bf
import httpx
from redis.asyncio import Redis
from server_process import (
    ACCOUNT_SID,
    API_KEY,
    AUTH_TOKEN,
    REDIS_URL,
    cluster_settings,
    run_server,
    setup,
)

from app.cluster.base import ControlReply
from app.cluster.redis_cluster import RedisCluster
from app.simulator.audio import speech_like
from app.simulator.carrier import CallScript
from app.simulator.twilio_api import FakeTwilioApi


def percentiles(samples_ms: list[float]) -> str:
    ordered = sorted(samples_ms)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    return f"p50 {statistics.median(ordered):6.2f} ms   p95 {p95:6.2f} ms   (n={len(ordered)})"


async def timed_requests(base_url: str, call_id: str, n: int) -> list[float]:
    body = {"type": "user_text_message", "text": "hello"}
    samples = []
    async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": API_KEY}, timeout=40) as client:
        for _ in range(n + 10):
            start = time.perf_counter()
            response = await client.post(f"/api/calls/{call_id}/send_data_message", json=body)
            samples.append((time.perf_counter() - start) * 1000)
            assert response.json()["code"] == "unsupported_message", response.text
    return samples[10:]  # the first ones warm up connections


async def live_call(base_url: str, agent: str) -> str:
    """A call dialled through `base_url`, once joined: its id."""
    body = {"medium": {"twilio": {"outgoing": {"to": "+15550001234", "from": "+15550004321"}}}}
    async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": API_KEY}) as client:
        created = await client.post(f"/api/agents/{agent}/calls", json=body)
        call_id = created.raise_for_status().json()["callId"]
        for _ in range(200):
            if (await client.get(f"/api/calls/{call_id}")).json()["joined"]:
                return call_id
            await asyncio.sleep(0.05)
    raise RuntimeError(f"call {call_id} did not join")


async def through_servers(n: int) -> None:
    api = FakeTwilioApi(ACCOUNT_SID, AUTH_TOKEN)
    await api.start()
    api.callee = CallScript(audio=speech_like(600.0, 8000), tail_seconds=1.0)
    try:
        with contextlib.ExitStack() as stack:
            settings = stack.enter_context(cluster_settings())
            a, _ = stack.enter_context(run_server(**settings))
            b, _ = stack.enter_context(run_server(**settings))
            call_id = await live_call(a, await setup(a, {"twilio": api.base_url}))
            for label, server in (("to A, which holds the call (local)", a), ("to B (forwarded)", b)):
                samples = await timed_requests(server, call_id, n)
                print(f"send_data_message {label:38} {percentiles(samples)}")
    finally:
        await api.stop()


async def bus_only(n: int) -> None:
    prefix = f"cbbench-{uuid.uuid4().hex[:8]}"

    async def answer(call_id: str, body: bytes) -> ControlReply:
        return ControlReply(204)

    async def orphan(call_id: str, holder: str) -> None:
        pass

    a = RedisCluster(REDIS_URL, 10.0, instance_id="a", prefix=prefix)
    b = RedisCluster(REDIS_URL, 10.0, instance_id="b", prefix=prefix)
    for cluster in (a, b):
        await cluster.start(answer, orphan)
    try:
        a.registry.claim("call-1", object())
        await asyncio.sleep(0.2)
        samples = []
        for _ in range(n + 10):
            start = time.perf_counter()
            assert await b.forward("call-1", b'{"type": "hang_up"}') == ControlReply(204)
            samples.append((time.perf_counter() - start) * 1000)
        print(f"{'RedisCluster.forward alone (GET + PUBLISH + reply)':56} {percentiles(samples[10:])}")
    finally:
        for cluster in (a, b):
            await cluster.stop()


async def streams_alone(n: int) -> None:
    """The same round trip over Redis streams (what pub/sub was chosen over): the requester XADDs to the
    holder's stream, the holder XREADs it (blocking) and XADDs the answer to the requester's stream."""
    prefix = f"cbbench-{uuid.uuid4().hex[:8]}"
    requests, replies = f"{prefix}:control:a", f"{prefix}:reply:b"
    holder, requester = Redis.from_url(REDIS_URL), Redis.from_url(REDIS_URL)

    async def serve() -> None:
        last = "0-0"  # both streams are new: read from their start, so nothing sent early is missed
        while True:
            for _, entries in await holder.xread({requests: last}, block=0):
                for entry_id, fields in entries:
                    last = entry_id
                    await holder.xadd(replies, {"id": fields[b"id"], "status": b"204"})

    serving = asyncio.create_task(serve())
    try:
        await asyncio.sleep(0.1)
        last_reply, samples = "0-0", []
        for i in range(n + 10):
            start = time.perf_counter()
            await requester.xadd(requests, {"id": str(i), "body": b'{"type": "hang_up"}'})
            answer = await requester.xread({replies: last_reply}, block=5000)
            last_reply = answer[0][1][-1][0]
            samples.append((time.perf_counter() - start) * 1000)
        print(
            f"{'the same over Redis streams (XADD, XREAD BLOCK, XADD back)':56} {percentiles(samples[10:])}"
        )
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        await holder.delete(requests, replies)
        for client in (holder, requester):
            await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    bf.print_machine("callbridge control across instances (PostgreSQL + Redis, two real servers)")
    asyncio.run(bus_only(args.requests))
    asyncio.run(streams_alone(args.requests))
    asyncio.run(through_servers(args.requests))


if __name__ == "__main__":
    main()
