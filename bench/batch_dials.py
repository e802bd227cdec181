"""Scheduled batches: the scheduler's dials per second, concurrency against the cap, CPU and memory.

A real `callbridge serve` subprocess (its embedded SQLite, or PostgreSQL with --postgres) dials one batch of
--calls N through the fake Twilio, Telnyx and Plivo REST APIs (app/simulator/*_api.py, in this process on
loopback), call i on provider i % 3 by its `medium`. Every callee rings for --ring S and does not answer
(the fakes' `outcome = "no-answer"`: the provider's own final status callback, no media), so each call is
live for a while and the batch's maxConcurrency is what limits it; callsPerMinute is set high.

Every --sample S the server's RSS and CPU (its process tree, from /proc), the dials the fakes received and
the calls up at the fakes are printed. At the end: dials per second, the most calls up at once at the
fakes against the cap, time to completion, the scheduled calls' fates, numbers dialled twice, server CPU
per dial. With --duration S the batch runs S seconds and is left unfinished (for memory with 100,000 calls).

Run: `.venv/bin/python bench/batch_dials.py [--calls 10000] [--max-concurrency 20] [--ring 0.5]`
     `.venv/bin/python bench/batch_dials.py --calls 100000 --duration 120 [--postgres]`
Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import bench_frames as bf
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_process import (
    ACCOUNT_SID,
    API_KEY,
    AUTH_TOKEN,
    PLIVO_AUTH_ID,
    PLIVO_AUTH_TOKEN,
    POSTGRES_URL,
    TELNYX_ACCOUNT_SID,
    TELNYX_API_KEY,
    run_server,
    scratch_postgres,
    setup,
    telnyx_signing_key,
    tree_cpu_seconds,
    tree_rss_kib,
)

from app.cli_batches import Progress, batches_path, fetch_progress
from app.simulator.plivo_api import FakePlivoApi
from app.simulator.provider_api import FakeCall, FakeProviderApi, most_live_at_once
from app.simulator.telnyx_api import FakeTelnyxApi
from app.simulator.twilio_api import FakeTwilioApi

#: The PostgreSQL server of tests/conftest.py (trust auth); each run makes and drops a database of its own.
FROM = "+15550007777"
#: Dials closer together than this are one burst (one scheduler tick's claim).
BURST_GAP_S = 0.25
#: RSS growth is counted from the first sample after this (imports, caches and pools warm up first).
WARM_UP_S = 30.0


def fake_apis(ring_s: float) -> dict[str, FakeProviderApi]:
    """The three fake REST APIs, with the credentials `setup` imports; callees ring `ring_s`, never answer."""
    apis: dict[str, FakeProviderApi] = {
        "twilio": FakeTwilioApi(ACCOUNT_SID, AUTH_TOKEN),
        "telnyx": FakeTelnyxApi(TELNYX_API_KEY, telnyx_signing_key(), account_sid=TELNYX_ACCOUNT_SID),
        "plivo": FakePlivoApi(PLIVO_AUTH_ID, PLIVO_AUTH_TOKEN),
    }
    for api in apis.values():
        api.ring_seconds = ring_s
        api.outcome = "no-answer"
    return apis


def batch_calls(n: int, providers: list[str]) -> list[dict[str, Any]]:
    """n scheduled calls to distinct numbers, spread round-robin over `providers`."""
    return [
        {"medium": {providers[i % len(providers)]: {"outgoing": {"to": f"+1444{i:07d}", "from": FROM}}}}
        for i in range(n)
    ]


@contextlib.asynccontextmanager
async def started(apis: dict[str, FakeProviderApi]) -> AsyncIterator[None]:
    """The fakes serving on loopback ports, stopped afterwards."""
    try:
        for api in apis.values():
            await api.start()
        yield
    finally:
        for api in apis.values():
            await api.stop()


@dataclass
class Sample:
    """One look at the run: seconds since the batch was posted, dials so far, calls up, server CPU and RSS."""

    t: float
    dials: int
    up: int
    cpu_s: float
    rss_kib: int


def all_calls(apis: dict[str, FakeProviderApi]) -> list[FakeCall]:
    return [call for api in apis.values() for call in api.calls.values()]


def look(apis: dict[str, FakeProviderApi], pid: int, since: float) -> Sample:
    """The run now, seen from the fakes and /proc."""
    calls = all_calls(apis)
    return Sample(
        time.monotonic() - since,
        len(calls),
        sum(1 for call in calls if call.live),
        tree_cpu_seconds(pid),
        tree_rss_kib(pid),
    )


def print_sample(sample: Sample, previous: Sample) -> None:
    span = max(sample.t - previous.t, 1e-9)
    print(
        f"  {sample.t:7.1f} s  dials {sample.dials:7d}  {(sample.dials - previous.dials) / span:6.1f}/s  "
        f"up {sample.up:3d}  server RSS {sample.rss_kib / 1024:7.1f} MiB  "
        f"CPU {(sample.cpu_s - previous.cpu_s) / span * 100:5.1f} %",
        flush=True,
    )


@contextlib.contextmanager
def api_client(base_url: str) -> Iterator[httpx.Client]:
    """A blocking client for callbridge's API (app.cli_batches' helpers take one; run them in a thread)."""
    with httpx.Client(base_url=base_url, headers={"X-API-Key": API_KEY}, timeout=60) as client:
        yield client


async def run(args: argparse.Namespace) -> None:
    """Post the batch, sample until it ends (or --duration passes), print the summary."""
    apis = fake_apis(args.ring)
    env = {} if args.scheduler_interval is None else {"SCHEDULER_INTERVAL": str(args.scheduler_interval)}
    async with contextlib.AsyncExitStack() as stack:
        if args.postgres:
            env["DATABASE_URL"] = stack.enter_context(scratch_postgres())
        await stack.enter_async_context(started(apis))
        base_url, pid = stack.enter_context(run_server(**env))
        agent = await setup(base_url, {name: api.base_url for name, api in apis.items()})
        client = stack.enter_context(api_client(base_url))
        await dial_batch(args, apis, client, agent, pid)


async def dial_batch(
    args: argparse.Namespace, apis: dict[str, FakeProviderApi], client: httpx.Client, agent: str, pid: int
) -> None:
    """The batch from its POST to its end (or --duration), sampled every --sample seconds."""
    body = {
        "calls": batch_calls(args.calls, list(apis)),
        "maxConcurrency": args.max_concurrency,
        "callsPerMinute": args.calls_per_minute,
    }
    idle = look(apis, pid, time.monotonic())
    posting = time.monotonic()
    cpu_before = tree_cpu_seconds(pid)
    response = await asyncio.to_thread(client.post, batches_path(agent), json=body)
    batch = response.raise_for_status().json()
    posted = time.monotonic()
    first = look(apis, pid, posted)
    print(
        f"batch of {args.calls} calls posted in {posted - posting:.2f} s "
        f"(server CPU {first.cpu_s - cpu_before:.2f} s, RSS {idle.rss_kib / 1024:.1f} -> "
        f"{first.rss_kib / 1024:.1f} MiB)"
    )
    samples, progress = [first], await asyncio.to_thread(fetch_progress, client, agent, batch["batchId"])
    bench_cpu = time.process_time()
    while not progress.ended and (args.duration is None or samples[-1].t < args.duration):
        await asyncio.sleep(args.sample)
        samples.append(look(apis, pid, posted))
        print_sample(samples[-1], samples[-2])
        progress = await asyncio.to_thread(fetch_progress, client, agent, batch["batchId"])
    bench_cpu = time.process_time() - bench_cpu
    path = f"{batches_path(agent)}/{batch['batchId']}"
    shown = await asyncio.to_thread(client.get, path)
    summarize(args, apis, samples, progress, shown.json(), posted, bench_cpu)
    errors = await asyncio.to_thread(
        client.get, f"{path}/scheduled_calls", params={"status": "ERROR", "pageSize": 10}
    )
    for call in errors.json()["results"]:
        print(f"  ERROR: {call['medium']} attempts {call['attempts']} call {call['callId']}: {call['error']}")


def summarize(
    args: argparse.Namespace,
    apis: dict[str, FakeProviderApi],
    samples: list[Sample],
    progress: Progress,
    batch: dict[str, Any],
    posted: float,
    bench_cpu_s: float,
) -> None:
    """Everything the run shows, from the fakes' records and the samples."""
    calls = all_calls(apis)
    created = sorted(call.created_at for call in calls)
    last = samples[-1]
    print(f"\nsummary ({'PostgreSQL' if args.postgres else 'SQLite'}):")
    if len(created) > 1:
        span = created[-1] - created[0]
        rate = (len(created) - 1) / span
        print(
            f"  dials {len(calls)} ({', '.join(f'{n} {len(a.calls)}' for n, a in apis.items())}) "
            f"in {span:.1f} s from the first to the last = {rate:.1f}/s = {rate * 60:.0f}/min"
        )
        starts = bursts(created)
        print(
            f"  the dials came in {len(starts)} bursts (dials under {BURST_GAP_S} s apart): "
            f"{len(created) / len(starts):.1f} dials each, one every "
            f"{(starts[-1] - starts[0]) / max(len(starts) - 1, 1):.2f} s"
        )
    most = most_live_at_once(calls)
    print(f"  most calls up at once at the fakes: {most} (maxConcurrency {args.max_concurrency})")
    if most > args.max_concurrency:
        message = (
            f"!!! CAP EXCEEDED: {most} calls were up at once at the fakes, the cap is {args.max_concurrency}"
        )
        print(message)
        print(message, file=sys.stderr)
    ended_at = batch.get("endedAt")
    if ended_at:
        done_s = datetime.fromisoformat(ended_at).timestamp() - (time.time() - (time.monotonic() - posted))
        print(f"  batch ended {done_s:.1f} s after its POST answered")
    else:
        print(f"  batch not ended after {last.t:.1f} s ({args.calls - progress.settled} calls left)")
    print(f"  fates: SUCCESS {progress.succeeded}, ERROR {progress.failed}, EXPIRED {progress.expired}")
    dials = Counter(call.to for call in calls)
    twice = {number: count for number, count in dials.items() if count > 1}
    print(f"  numbers dialled twice or more: {len(twice)}")
    if twice:
        print(f"!!! DUPLICATE DIALS: {dict(list(twice.items())[:10])}", file=sys.stderr)
    dialled = last.dials - samples[0].dials
    if dialled:
        cpu = last.cpu_s - samples[0].cpu_s
        print(
            f"  server CPU {cpu:.1f} s over {last.t:.1f} s ({cpu / last.t * 100:.0f} % of a core) = "
            f"{cpu / dialled * 1000:.2f} ms per dial; "
            f"this process (the fakes) {bench_cpu_s / dialled * 1000:.2f} ms"
        )
    rss = [sample.rss_kib / 1024 for sample in samples]
    print(
        f"  server RSS: {rss[0]:.1f} MiB after the POST, min {min(rss):.1f}, max {max(rss):.1f}, "
        f"last {rss[-1]:.1f} MiB"
    )
    warm = next((sample for sample in samples if sample.t >= WARM_UP_S), None)
    if warm is not None and last.dials > warm.dials:
        grown = (last.rss_kib - warm.rss_kib) / 1024
        print(
            f"  after the first {WARM_UP_S:.0f} s ({warm.rss_kib / 1024:.1f} MiB at {warm.dials} dials): "
            f"{grown:+.1f} MiB over {last.dials - warm.dials} dials = "
            f"{grown / (last.dials - warm.dials) * 1000:+.2f} MiB per 1,000 dials"
        )


def bursts(times: list[float]) -> list[float]:
    """The start of each run of (sorted) `times` less than BURST_GAP_S apart: one per scheduler tick."""
    return [t for i, t in enumerate(times) if i == 0 or t - times[i - 1] >= BURST_GAP_S]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--max-concurrency", type=int, default=20)
    parser.add_argument("--calls-per-minute", type=float, default=6000, help="the batch's pace (high)")
    parser.add_argument("--ring", type=float, default=0.5, help="seconds each callee rings before no-answer")
    parser.add_argument("--duration", type=float, help="stop after S seconds (default: run to completion)")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--postgres", action="store_true", help=f"run on PostgreSQL ({POSTGRES_URL})")
    parser.add_argument("--scheduler-interval", type=float, help="CALLBRIDGE_SCHEDULER_INTERVAL (default 1)")
    args = parser.parse_args()
    bf.print_machine(
        "callbridge scheduled batches: real server subprocess, fake Twilio/Telnyx/Plivo REST APIs"
    )
    print(
        f"{args.calls} calls, maxConcurrency {args.max_concurrency}, "
        f"callsPerMinute {args.calls_per_minute:g}, ring {args.ring} s then no-answer, "
        f"{'PostgreSQL' if args.postgres else 'SQLite'}"
    )
    print(f"load average before: {load_average()}")
    asyncio.run(run(args))
    print(f"load average after: {load_average()}")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (as `uptime` shows them)."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
