"""Outbound calls: dial latency and throughput, status-callback throughput, DTMF synthesis cost.

A real `callbridge serve` subprocess dials through the fake Twilio REST API (in this process, on loopback),
whose callee answers busy (no media: this measures the REST and webhook path only). Then signed status
callbacks are posted straight at callbridge, and DTMF tones are synthesized in-process.

Run: `.venv/bin/python bench/outbound_calls.py [--dials 100] [--callbacks 1000] [--concurrency 10]`.
Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import timeit
from pathlib import Path
from urllib.parse import urlencode

import bench_frames as bf
import httpx
from twilio.request_validator import RequestValidator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_process import API_KEY, run_server

from app.media.dtmf import _tone, dtmf_tones
from app.simulator.twilio_api import FakeTwilioApi

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "bench-outbound-auth-token"


def ms(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


async def setup(api: httpx.AsyncClient, fake: FakeTwilioApi) -> str:
    body = {
        "accountSid": ACCOUNT_SID,
        "authToken": AUTH_TOKEN,
        "callCreationAllowAllAgents": True,
        "apiBaseUrl": fake.base_url,
    }
    (await api.post("/api/telephony_configs/twilio", json=body)).raise_for_status()
    return (await api.post("/api/agents", json={"name": "dialler"})).raise_for_status().json()["agentId"]


async def bench_dials(
    api: httpx.AsyncClient, fake: FakeTwilioApi, agent: str, n: int, concurrency: int
) -> list[str]:
    """n dials, `concurrency` at a time: latency of POST /calls (the provider's create included)."""
    body = {"medium": {"twilio": {"outgoing": {"to": "+15550001111", "from": "+15550002222"}}}}
    latencies: list[float] = []
    call_ids: list[str] = []
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        fake.queue_outcome("busy")
        async with gate:
            start = time.perf_counter()
            response = await api.post(f"/api/agents/{agent}/calls", json=body)
            latencies.append(time.perf_counter() - start)
            call_ids.append(response.raise_for_status().json()["callId"])

    before = len(fake.requests)
    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    wall = time.perf_counter() - start
    creates = [r for r in fake.requests[before:] if r.path.endswith("/Calls.json")]
    print(
        f"dials: {n} ({concurrency} at a time) in {wall:.2f} s = {n / wall:.0f}/s; "
        f"provider creates {len(creates)}"
    )
    print(
        f"  POST /calls latency (includes the fake provider's create): p50 {ms(latencies, 0.5):.1f} ms, "
        f"p95 {ms(latencies, 0.95):.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )
    return call_ids


async def bench_callbacks(base_url: str, call_ids: list[str], n: int, concurrency: int) -> None:
    """n signed Twilio status callbacks (`ringing`, recorded as events) spread over the calls."""
    validator = RequestValidator(AUTH_TOKEN)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=10) as client:

        async def one(i: int) -> None:
            call_id = call_ids[i % len(call_ids)]
            url = f"{base_url}/api/calls/{call_id}/telephony/status"
            params = {"CallSid": f"CA{i:032d}", "CallStatus": "ringing", "AccountSid": ACCOUNT_SID}
            headers = {
                "X-Twilio-Signature": validator.compute_signature(url, params),
                "content-type": "application/x-www-form-urlencoded",
            }
            async with gate:
                start = time.perf_counter()
                response = await client.post(url, content=urlencode(params), headers=headers)
                latencies.append(time.perf_counter() - start)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - start
    print(
        f"status callbacks: {n} ({concurrency} at a time) in {wall:.2f} s = {n / wall:.0f}/s; "
        f"answers {statuses}"
    )
    print(f"  latency p50 {ms(latencies, 0.5):.1f} ms, p95 {ms(latencies, 0.95):.1f} ms")


def bench_dtmf() -> None:
    for rate in (8000, 16000, 48000):
        for digits in ("12#", "0123456789*#"):

            def cold(rate: int = rate, digits: str = digits) -> None:
                _tone.cache_clear()
                dtmf_tones(digits, rate)

            cold_us = min(timeit.repeat(cold, number=20, repeat=5)) / 20 * 1e6

            def warm(rate: int = rate, digits: str = digits) -> None:
                dtmf_tones(digits, rate)

            warm_us = min(timeit.repeat(warm, number=200, repeat=5)) / 200 * 1e6
            print(
                f"dtmf {digits:>13} at {rate:>5} Hz: {cold_us:8.0f} µs first time, {warm_us:6.1f} µs cached"
            )


async def main(dials: int, callbacks: int, concurrency: int) -> None:
    bf.print_machine("callbridge outbound calls: real server subprocess, fake Twilio REST API")
    fake = FakeTwilioApi(ACCOUNT_SID, AUTH_TOKEN)
    fake.ring_seconds = 0.05
    await fake.start()
    try:
        with run_server() as (base_url, _pid):
            async with httpx.AsyncClient(
                base_url=base_url, headers={"X-API-Key": API_KEY}, timeout=30
            ) as api:
                agent = await setup(api, fake)
                await bench_dials(api, fake, agent, 10, 1)  # warm-up
                call_ids = await bench_dials(api, fake, agent, dials, concurrency)
                await bench_callbacks(base_url, call_ids, callbacks, concurrency)
    finally:
        await fake.stop()
    bench_dtmf()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dials", type=int, default=100)
    parser.add_argument("--callbacks", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.dials, args.callbacks, args.concurrency))
