"""Accepting a scheduled batch of 100,000 calls: time to the 201, server memory, event-loop stalls.

A real `callbridge serve` subprocess (SQLite by default; `--postgres` on a fresh database created on the
test server and dropped afterwards) gets a 100-call warm-up batch, then the measured one, posted whole
(`Content-Length`, as `curl -d @file` sends it). The batch is paused, so nothing is dialled. Printed:
seconds from the first byte sent to the 201; the server's RSS (VmRSS, sampled every 50 ms) before, at its
peak during, and after (at the 201 and 2 s later); the event loop's worst lag during the accept
(`callbridge_event_loop_lag_max_seconds` and the lag histogram's counts, from /metrics), and how long a
`GET /healthz` sent every 20 ms during the accept took at worst (what a live call's requests would see).

Run: `.venv/bin/python bench/batch_accept.py [--calls 100000] [--postgres]`. To measure another checkout's
code, run this file with that checkout's venv python: the server is `python -m app.cli serve` of the
interpreter running it. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import subprocess
import sys
import time
from pathlib import Path

import bench_frames as bf
import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_process import API_KEY, POSTGRES_URL, ServerSampler, run_server, scratch_postgres

PING_EVERY_S = 0.02
LAG_BUCKET = re.compile(r'^callbridge_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', re.M)
LAG_MAX = re.compile(r"^callbridge_event_loop_lag_max_seconds (\S+)$", re.M)


def batch_body(calls: int) -> bytes:
    """A paused batch of `calls` Twilio calls, each with a template context and metadata (~180 bytes)."""
    return orjson.dumps(
        {
            "paused": True,
            "maxConcurrency": 20,
            "callsPerMinute": 600,
            "calls": [
                {
                    "medium": {"twilio": {"outgoing": {"to": f"+1415{n:07d}", "from": "+14155550199"}}},
                    "templateContext": {"name": f"Person {n}", "appointment": "Thursday 10:00"},
                    "metadata": {"crm_id": f"C-{n}"},
                }
                for n in range(calls)
            ],
        }
    )


async def loop_lag(api: httpx.AsyncClient) -> tuple[float, dict[float, float]]:
    """The server's worst event-loop lag since start, and its lag histogram (cumulative count per bucket)."""
    text = (await api.get("/metrics")).raise_for_status().text
    match = LAG_MAX.search(text)
    buckets = {float(le): float(count) for le, count in LAG_BUCKET.findall(text)}
    return float(match.group(1)) if match else float("nan"), buckets


async def ping_until(api: httpx.AsyncClient, done: asyncio.Event, latencies: list[float]) -> None:
    """`GET /healthz` every PING_EVERY_S until `done`: each one's latency."""
    while not done.is_set():
        start = time.perf_counter()
        await api.get("/healthz")
        latencies.append(time.perf_counter() - start)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), PING_EVERY_S)


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


async def accept(base_url: str, pid: int, calls: int) -> None:
    async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": API_KEY}, timeout=300) as api:
        agent = (await api.post("/api/agents", json={"name": "batch"})).raise_for_status().json()["agentId"]
        url = f"/api/agents/{agent}/scheduled_batches"
        (await api.post(url, content=batch_body(100))).raise_for_status()  # warm-up: imports, first queries
        body = batch_body(calls)
        print(f"body: {calls} calls, {len(body) / 2**20:.1f} MiB")
        await asyncio.sleep(1)  # let the warm-up's garbage go before "before"
        lag_before, hist_before = await loop_lag(api)
        with ServerSampler(pid) as sampler:
            await asyncio.sleep(0.2)
            before = sampler.rss_at(time.monotonic())
            done, pings = asyncio.Event(), []
            async with httpx.AsyncClient(base_url=base_url, timeout=300) as pinger:
                ping = asyncio.create_task(ping_until(pinger, done, pings))
                start = time.monotonic()
                response = await api.post(url, content=body, headers={"Content-Type": "application/json"})
                end = time.monotonic()
                done.set()
                await ping
            await asyncio.sleep(2)
            later = sampler.rss_at(time.monotonic())
        at_201 = sampler.rss_at(end + 0.05)
        peak = sampler.peak_rss(start, end)
        lag_after, hist_after = await loop_lag(api)
    batch = response.raise_for_status().json()
    print(f"accepted: 201 in {end - start:.2f} s, totalCount {batch['totalCount']}")
    print(
        f"server RSS: before {mib(before)}, peak during {mib(peak)} (+{mib(peak - before)}), "
        f"at the 201 {mib(at_201)}, 2 s later {mib(later)}"
    )
    if lag_after > lag_before:
        print(f"event loop: worst lag during the accept {lag_after * 1000:.0f} ms")
    else:
        print(f"event loop: worst lag during the accept at most {lag_before * 1000:.0f} ms (the start-up's)")
    total = hist_after[float("inf")] - hist_before[float("inf")]
    over = [
        f"over {le * 1000:g} ms {total - (hist_after[le] - hist_before[le]):.0f}"
        for le in (0.005, 0.02, 0.05, 0.1)
    ]
    print(f"  10 ms probe wake-ups during the accept: {total:.0f}, late by " + ", ".join(over))
    pings.sort()
    print(
        f"GET /healthz every {PING_EVERY_S * 1000:g} ms during the accept: {len(pings)} answered, "
        f"p50 {pings[len(pings) // 2] * 1000:.1f} ms, p99 {pings[int(len(pings) * 0.99)] * 1000:.1f} ms, "
        f"max {pings[-1] * 1000:.0f} ms"
    )


def app_checkout() -> str:
    """Where the server's `app` package comes from (this interpreter's install)."""
    found = subprocess.run(
        [sys.executable, "-c", "import app, pathlib; print(pathlib.Path(app.__file__).parent.parent)"],
        cwd="/",  # not this checkout: the installed `app`, as the server (run elsewhere) imports it
        capture_output=True,
        text=True,
        check=True,
    )
    return found.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--postgres", action="store_true", help=f"on PostgreSQL ({POSTGRES_URL})")
    args = parser.parse_args()
    bf.print_machine(
        "callbridge: accepting a scheduled batch", database="postgres" if args.postgres else "sqlite"
    )
    print(f"server code: {app_checkout()}")
    with contextlib.ExitStack() as stack:
        overrides = {"DATABASE_URL": stack.enter_context(scratch_postgres())} if args.postgres else {}
        base_url, pid = stack.enter_context(run_server(**overrides))
        asyncio.run(accept(base_url, pid, args.calls))


if __name__ == "__main__":
    main()
