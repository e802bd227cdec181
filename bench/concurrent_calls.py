"""Calls per core, measured from outside: fake carriers in worker processes against a real `callbridge serve`.

Run: `.venv/bin/python bench/concurrent_calls.py [--kind twilio] [--calls 50,100,200,400] [--seconds 20]`,
or `--soak MINUTES --concurrency N`; `--profile SECONDS` adds a py-spy GIL profile of the server mid-level;
`--before REF` and `--peer pipecat` add rows for callbridge at a git ref and for pipecat's Twilio bot
(bench_servers.py), taking turns per level (`--repeat K` times), with a line of ratios after each level.
Prints numbers; asserts nothing. bench/README.md says what each number means.

Each row gets a fresh server: callbridge as `python -m app.cli serve` (uvicorn, uvloop when installed, as
`callbridge serve`), or bench/pipecat_twilio_bot.py. The fake carriers (app/simulator) run in `--workers`
spawned processes of at most ~CALLS_PER_WORKER calls each, on uvloop. A worker does nothing heavy while
calls are live: each call's round trip (FFT correlation) is measured only after every worker's calls have
ended, from the played audio it kept (within KEEP_BYTES) and the sent audio regenerated from its seed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import multiprocessing as mp
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import bench_frames as bf
import httpx
import numpy as np
from bench_servers import Cluster, ServerFailed, ServerUnderTest, Target, chosen
from loop_lateness import Lateness
from server_process import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    PLIVO_AUTH_ID,
    PLIVO_AUTH_TOKEN,
    ServerSampler,
    event_loop_of,
    telnyx_signing_key,
    tree_cpu_seconds,
    tree_rss_kib,
)
from websockets.asyncio.client import connect as ws_connect

from app.simulator.audio import measure_round_trip, speech_like
from app.simulator.carrier import CallReport, CallScript, FakeCarrier, Progress, StreamSession
from app.simulator.plivo import FakePlivo
from app.simulator.telnyx import FakeTelnyx
from app.simulator.twilio import FakeTwilio

KIND_RATES = {"twilio": 8000, "telnyx": 16000, "plivo": 16000}  # μ-law 8 kHz; L16 16 kHz (their default)
TAIL_S = 1.0
STAGGER_S = 1.5
CALLS_PER_WORKER = 100
SETTLE_S = 2.0
START_AHEAD_S = 1.0  # the workers' common start, after the last is ready
SOAK_POOL = 16  # distinct caller audios per soak worker
KEEP_BYTES = 128 << 20  # played audio a worker keeps for the analysis; calls past it are not correlated
RSS_EVERY_S = 30.0
LOW_CORR = 0.9
PROFILE_TOP = 25
WARM_UP_S = 0.5  # each worker's own first call, before the clock starts
SETUP_S = 0.5  # a call's webhook and handshake, before its media flows
RETRY_S = 1.0  # a soak slot whose call failed waits this long before the next


# --- the worker side ----------------------------------------------------------------------------------


class SharedClientWebhooks(FakeCarrier):
    """FakeCarrier.webhook through one shared httpx client (a new client per call costs ~30 ms of CPU),
    to one given webhook URL (callbridge's agent webhook, or the pipecat bot's)."""

    client: httpx.AsyncClient
    fixed_webhook_url: str

    def webhook_url(self, agent_id: str, query: str = "") -> str:
        return f"{self.fixed_webhook_url}?{query}" if query else self.fixed_webhook_url

    async def webhook(
        self, agent_id: str, params: dict[str, str], *, headers: dict[str, str] | None = None, query: str = ""
    ) -> httpx.Response:
        url = self.webhook_url(agent_id, query)
        body = urlencode(params).encode()
        signed = self.sign(url, body, params) if headers is None else headers
        content_type = {"content-type": "application/x-www-form-urlencoded"}
        return await self.client.post(url, content=body, headers={**content_type, **signed})


class Twilio(SharedClientWebhooks, FakeTwilio):
    pass


class Telnyx(SharedClientWebhooks, FakeTelnyx):
    pass


class Plivo(SharedClientWebhooks, FakePlivo):
    pass


def make_carrier(kind: str, webhook_url: str, client: httpx.AsyncClient) -> SharedClientWebhooks:
    """The fake carrier of `kind` (the credentials `setup` imports), calling `webhook_url`."""
    carrier: SharedClientWebhooks
    base_url = webhook_url  # the carrier's own base URL goes unused: webhook_url() is overridden
    if kind == "twilio":
        carrier = Twilio(base_url, ACCOUNT_SID, AUTH_TOKEN)
    elif kind == "telnyx":
        carrier = Telnyx(base_url, telnyx_signing_key())
    else:
        carrier = Plivo(base_url, PLIVO_AUTH_ID, PLIVO_AUTH_TOKEN)
    carrier.client, carrier.fixed_webhook_url = client, webhook_url
    return carrier


class DeferredSession(StreamSession):
    """A StreamSession whose report leaves the round trip out: it is measured after the calls, not in them."""

    def _report(self, ended_by: str) -> CallReport:
        self.sent_audio = b""  # (sent only by now) measure_round_trip returns None at once without it
        return super()._report(ended_by)


async def run_call(
    carrier: SharedClientWebhooks,
    script: CallScript,
    on_progress: Callable[[Progress], None],
    deflate: bool = True,
) -> CallReport:
    """Webhook, then the media stream the XML names, run to its end (carrier.call with DeferredSession)."""
    stream = await carrier.answer("", script)  # agent_id: in the webhook URL already
    compression = "deflate" if deflate else None  # websockets offers permessage-deflate by default
    headers, size = stream.headers, 2**22
    async with ws_connect(
        stream.url, additional_headers=headers, max_size=size, compression=compression
    ) as ws:
        return await DeferredSession(ws, carrier.wire(stream), script, on_progress).run()


@dataclass
class Placed:
    """One call as a worker placed it; `played` is kept only until the analysis."""

    seed: int
    n_bytes: int  # of the caller's audio (s16le at the kind's rate), the tail left out
    started: float  # time.monotonic(), which every process shares: webhook sent
    ok: bool = False
    error: str = ""
    media_start: float = 0.0  # first media message sent
    ended: float = 0.0  # stream over (or the failure)
    underruns: int = 0  # playback ticks without agent audio between the first and last echo
    stalls: int = 0  # the fake carrier fell a frame behind real time and paused its clock
    ended_by: str = ""  # "carrier" (the script ran out) or "callbridge" (it closed the stream first)
    played: bytes = b""


@dataclass(frozen=True)
class CallResult:
    """One call's outcome as the parent sees it."""

    ok: bool
    error: str
    started: float
    media_start: float
    ended: float
    underruns: int
    ended_by: str
    analysed: bool
    correlation: float = 0.0  # 0: no audio came back
    lag_ms: float = math.nan


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker places: `calls` (start delays) at once, or `slots` (delay, first call's share)."""

    index: int
    kind: str
    webhook_url: str
    seconds: float
    calls: tuple[tuple[int, float], ...] = ()  # (seed, delay after t0)
    slots: tuple[tuple[float, float], ...] = ()  # soak: (delay after t0, share of the first call's audio)
    soak_s: float = 0.0
    deflate: bool = True  # offer permessage-deflate on the media stream, as app/simulator does


@dataclass(frozen=True)
class WorkerLoad:
    """A worker's own load while its calls were live."""

    index: int
    calls: int
    cpu_s: float
    wall_s: float
    worst_ms: float
    worst_after_s: float  # when the worst happened, after t0
    p99_ms: float
    carrier_stalls: int


@dataclass
class Budget:
    """How many played bytes a worker may still keep."""

    left: int = KEEP_BYTES

    def take(self, n: int) -> bool:
        if n > self.left:
            return False
        self.left -= n
        return True


def frame_aligned(n_bytes: int, rate: int) -> int:
    """`n_bytes` rounded down to whole 20 ms frames of s16le at `rate` (at least one)."""
    frame = 2 * rate // 50
    return max(frame, n_bytes - n_bytes % frame)


async def place(
    carrier: SharedClientWebhooks, spec: WorkerSpec, seed: int, audio: bytes, budget: Budget
) -> Placed:
    """One call with `audio`; failures are recorded, not raised."""
    rate = KIND_RATES[spec.kind]
    record = Placed(seed, len(audio), time.monotonic())

    def on_progress(progress: Progress) -> None:
        if not record.media_start:
            record.media_start = time.monotonic()

    script = CallScript(audio=audio, tail_seconds=TAIL_S, sample_rate=rate)
    try:
        report = await run_call(carrier, script, on_progress, spec.deflate)
    except Exception as exc:  # a failed call is counted, not a crash of the run
        record.error, record.ended = repr(exc)[:200], time.monotonic()
        return record
    record.ended, record.ok = time.monotonic(), True
    record.underruns, record.stalls = report.underrun_ticks, report.carrier_stalls
    record.ended_by = report.ended_by
    record.played = report.played if budget.take(len(report.played)) else b""
    return record


async def delayed(delay_until: float, work: Callable[[], Any]) -> Any:
    await asyncio.sleep(max(0.0, delay_until - time.monotonic()))
    return await work()


async def soak_slot(
    carrier: SharedClientWebhooks,
    spec: WorkerSpec,
    slot: int,
    share: float,
    pool: list[tuple[int, bytes]],
    placed: list[Placed],
    budget: Budget,
    end: float,
) -> None:
    """Calls back to back until `end`; the first is cut to `share` of the audio so that slots end apart."""
    rate = KIND_RATES[spec.kind]
    number = 0
    while time.monotonic() < end:
        seed, audio = pool[(slot + number) % len(pool)]
        if number == 0:
            audio = audio[: frame_aligned(int(len(audio) * share), rate)]
        placed.append(record := await place(carrier, spec, seed, audio, budget))
        if not record.ok:
            await asyncio.sleep(RETRY_S)
        number += 1


async def live(spec: WorkerSpec, audios: dict[int, bytes], t0: float) -> tuple[list[Placed], WorkerLoad]:
    """Every call of the worker from `t0` (time.monotonic()), with this process's own load meanwhile."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        carrier = make_carrier(spec.kind, spec.webhook_url, client)
        budget, lateness = Budget(), Lateness()
        await asyncio.sleep(max(0.0, t0 - time.monotonic()))
        watcher = asyncio.create_task(lateness.watch())
        cpu0, wall0 = time.process_time(), time.monotonic()
        placed: list[Placed] = []
        if spec.soak_s:
            pool = sorted(audios.items())
            end = t0 + spec.soak_s
            slots = [
                delayed(
                    t0 + delay, lambda i=i, s=share: soak_slot(carrier, spec, i, s, pool, placed, budget, end)
                )
                for i, (delay, share) in enumerate(spec.slots)
            ]
            await asyncio.gather(*slots)
        else:
            calls = [
                delayed(t0 + delay, lambda s=seed: place(carrier, spec, s, audios[s], budget))
                for seed, delay in spec.calls
            ]
            placed = list(await asyncio.gather(*calls))
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        watcher.cancel()
    stalls = sum(p.stalls for p in placed)
    worst_after = lateness.worst_at - t0
    p99 = lateness.percentile_ms(0.99)
    load = WorkerLoad(spec.index, len(placed), cpu, wall, lateness.worst_ms, worst_after, p99, stalls)
    return placed, load


async def warm_up(spec: WorkerSpec) -> None:
    """One short call before the clock starts: the first call's lazy imports and set-up stay out of it."""
    async with httpx.AsyncClient(timeout=10) as client:
        carrier = make_carrier(spec.kind, spec.webhook_url, client)
        audio = speech_like(WARM_UP_S, KIND_RATES[spec.kind], seed=0)
        await place(carrier, dataclasses.replace(spec, seconds=WARM_UP_S), 0, audio, Budget(0))


def analysed(records: Iterable[Placed], spec: WorkerSpec) -> list[CallResult]:
    """Each call's round trip against its caller audio, regenerated from the seed (after the calls)."""
    rate = KIND_RATES[spec.kind]
    sent: dict[int, bytes] = {}
    results = []
    for p in records:
        base = CallResult(
            p.ok, p.error, p.started, p.media_start, p.ended, p.underruns, p.ended_by, bool(p.played)
        )
        if p.played:
            if p.seed not in sent:
                sent[p.seed] = speech_like(spec.seconds, rate, seed=p.seed)
            trip = measure_round_trip(sent[p.seed][: p.n_bytes], p.played, rate)
            if trip is not None:
                base = CallResult(**{**base.__dict__, "correlation": trip.correlation, "lag_ms": trip.lag_ms})
        elif p.ok:
            base = CallResult(**{**base.__dict__, "analysed": False})
        results.append(base)
        p.played = b""
    return results


def caller_audios(spec: WorkerSpec) -> dict[int, bytes]:
    """The caller audio by seed, made before the clock starts: one per call, or a pool for the soak."""
    rate = KIND_RATES[spec.kind]
    seeds = [seed for seed, _ in spec.calls] or [
        100_000 + SOAK_POOL * spec.index + i for i in range(SOAK_POOL)
    ]
    return {seed: speech_like(spec.seconds, rate, seed=seed) for seed in seeds}


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop when installed (as the server's), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def worker_main(spec: WorkerSpec, out: Any, go: Any, t0: Any, analyse: Any) -> None:
    """A worker process: ready → (go) calls → ended → (analyse) results, each reported on `out`."""
    audios = caller_audios(spec)
    asyncio.run(warm_up(spec), loop_factory=loop_factory())
    out.put(("ready", spec.index, None))
    go.wait()
    placed, load = asyncio.run(live(spec, audios, t0.value), loop_factory=loop_factory())
    del audios
    out.put(("ended", spec.index, load))
    analyse.wait()
    out.put(("results", spec.index, analysed(placed, spec)))


# --- the parent side ----------------------------------------------------------------------------------


@dataclass
class Run:
    """What one level or soak brought back."""

    t0: float
    end: float  # the last worker's calls over
    loads: list[WorkerLoad]
    results: list[CallResult]
    profile: list[str] = field(default_factory=list)


def collect(out: Any, what: str, procs: list[Any]) -> dict[int, Any]:
    """The `what` message of every worker (by index); raises when a worker died."""
    got: dict[int, Any] = {}
    while len(got) < len(procs):
        try:
            kind, index, payload = out.get(timeout=5)
        except queue.Empty:
            dead = [p.exitcode for p in procs if not p.is_alive()]
            if dead:
                raise RuntimeError(
                    f"a load-generator worker exited ({dead}) before sending {what!r}"
                ) from None
            continue
        assert kind == what, (kind, what)
        got[index] = payload
    return got


def run_workers(specs: list[WorkerSpec], during: Callable[[float], None] = lambda t0: None) -> Run:
    """Spawn the workers, start them together, and gather their loads and (analysed) calls."""
    ctx = mp.get_context("spawn")
    out, go, analyse, t0 = ctx.Queue(), ctx.Event(), ctx.Event(), ctx.Value("d", 0.0)
    procs = [ctx.Process(target=worker_main, args=(s, out, go, t0, analyse), daemon=True) for s in specs]
    for proc in procs:
        proc.start()
    try:
        collect(out, "ready", procs)
        t0.value = time.monotonic() + START_AHEAD_S
        go.set()
        during(t0.value)
        loads = collect(out, "ended", procs)
        end = time.monotonic()
        analyse.set()
        results = collect(out, "results", procs)
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    calls = [r for i in sorted(results) for r in results[i]]
    return Run(t0.value, end, [loads[i] for i in sorted(loads)], calls)


def split(items: list[Any], workers: int) -> list[tuple[Any, ...]]:
    """Round-robin shares of `items`, one per worker."""
    return [tuple(items[w::workers]) for w in range(workers)]


def level_specs(
    kind: str, webhook_url: str, n: int, seconds: float, workers: int, deflate: bool
) -> list[WorkerSpec]:
    """N calls at once (starts spread over STAGGER_S), dealt to the workers."""
    calls = [(1000 * n + i, STAGGER_S * i / n) for i in range(n)]
    return [
        WorkerSpec(w, kind, webhook_url, seconds, calls=c, deflate=deflate)
        for w, c in enumerate(split(calls, workers))
    ]


def soak_specs(
    kind: str, webhook_url: str, n: int, seconds: float, workers: int, soak_s: float, deflate: bool
) -> list[WorkerSpec]:
    """N slots (first starts spread over STAGGER_S, first calls cut to 1/N … N/N so endings spread out)."""
    slots = [(STAGGER_S * i / n, (i + 1) / n) for i in range(n)]
    return [
        WorkerSpec(w, kind, webhook_url, seconds, slots=s, soak_s=soak_s, deflate=deflate)
        for w, s in enumerate(split(slots, workers))
    ]


def profile_later(pid: int, start: float, seconds: float, lines: list[str]) -> threading.Thread:
    """A thread that runs py-spy on the server from `start` for `seconds` and leaves its top in `lines`."""

    def run() -> None:
        time.sleep(max(0.0, start - time.monotonic()))
        with tempfile.NamedTemporaryFile(suffix=".txt") as raw:
            cmd = [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--gil",
                "--function",
                "--nonblocking",
                "--subprocesses",
            ]
            cmd += ["--format", "raw", "-d", f"{seconds:g}", "-o", raw.name, "-p", str(pid)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                lines.append(f"py-spy failed: {done.stderr.strip()[-500:]}")
                return
            lines.extend(top_functions(Path(raw.name).read_text(encoding="utf-8")))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def short_frame(frame: str) -> str:
    """`fn (/long/path/site-packages/pkg/mod.py:12)` → `fn (pkg/mod.py:12)`."""
    name, _, where = frame.partition(" (")
    for marker in ("site-packages/", "/wt/loadgen/", "/lib/python3.13/"):
        if marker in where:
            return f"{name} ({where.split(marker, 1)[1]}"
    return frame


def top_functions(raw: str, top: int = PROFILE_TOP) -> list[str]:
    """The top functions of py-spy's raw (collapsed) stacks, `frame;frame;... count`, by self and by total."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [short_frame(f) for f in stack.split(";")]
        own[frames[-1]] += int(count)
        for frame in set(frames):
            total[frame] += int(count)
    samples = sum(own.values()) or 1
    lines = [f"GIL-holding samples: {samples}", f"{'self%':>6} {'total%':>6}  function (by self)"]
    lines += [
        f"{100 * n / samples:6.1f} {100 * total[f] / samples:6.1f}  {f}" for f, n in own.most_common(top)
    ]
    lines += [f"{'self%':>6} {'total%':>6}  function (by total)"]
    lines += [
        f"{100 * own[f] / samples:6.1f} {100 * n / samples:6.1f}  {f}" for f, n in total.most_common(top)
    ]
    return lines


def overlap_seconds(results: list[CallResult], start: float, end: float) -> float:
    """Call-seconds inside [start, end]: each call from its webhook to its end."""
    return sum(max(0.0, min(r.ended, end) - max(r.started, start)) for r in results)


ROW = "{:>7} {:>5} {:>7} {:>6} {:>6} {:>6} {:>9} {:>6} {:>6} | {:>5} {:>5} {:>5} {:>4} {:>4} {:>6} | "
ROW += "{:>6} {:>6} {:>6} {:>6}"
HEADER = ["server", "calls", "ok", "window", "CPU s", "%core", "ms/call-s", "all-in", "c/core"]
HEADER += ["p50", "p95", "drops", "d/c", "<0.9", "min c", "idle", "peak", "after", "KiB/c"]
MIB = 1024


def summary_row(
    label: tuple[str, str],
    run: Run,
    sampler: ServerSampler,
    window: tuple[float, float],
    idle: int,
    after: int,
    live: int,
) -> tuple[str, float]:
    """One row (labelled server, calls): server CPU in the window and all-in, echo quality, server memory;
    and the row's ms/call-s."""
    good = [r for r in run.results if r.ok]
    start, end = window
    cpu = sampler.at(end) - sampler.at(start)
    call_s = overlap_seconds(run.results, start, end)
    first, last = min(r.started for r in run.results), max(r.ended for r in run.results)
    all_in = 1000 * (sampler.at(last) - sampler.at(first)) / sum(r.ended - r.started for r in run.results)
    ms = 1000 * cpu / call_s if call_s else math.nan
    checked = [r for r in good if r.analysed]
    lags = [r.lag_ms for r in checked if not math.isnan(r.lag_ms)]
    p50, p95 = np.percentile(lags, [50, 95]) if lags else (math.nan, math.nan)
    peak = sampler.peak_rss(start, end)
    row = [*label, f"{len(good)}/{len(run.results)}", f"{end - start:.1f}", f"{cpu:.2f}"]
    row += [f"{100 * cpu / (end - start):.0f}%", f"{ms:.2f}", f"{all_in:.2f}", f"{1000 / ms:.0f}"]
    row += [f"{p50:.0f}", f"{p95:.0f}", sum(r.underruns for r in good), sum(1 for r in good if r.underruns)]
    row += [
        sum(1 for r in checked if r.correlation < LOW_CORR),
        f"{min((r.correlation for r in checked), default=0):.3f}",
    ]
    row += [f"{idle / MIB:.1f}", f"{peak / MIB:.1f}", f"{after / MIB:.1f}", f"{(peak - idle) / live:.0f}"]
    line = ROW.format(*row)
    if len(checked) < len(good):
        line += f"\n      correlated {len(checked)} of {len(good)} calls (KEEP_BYTES reached)"
    closed = sum(1 for r in good if r.ended_by == "callbridge")
    line += f"\n      {closed} calls' streams closed by the server before the caller's end" if closed else ""
    failures = Counter(r.error for r in run.results if not r.ok)
    return line + "".join(f"\n      failed x{n}: {e}" for e, n in failures.most_common(5)), ms


def generator_lines(run: Run) -> list[str]:
    """Each worker's own load: CPU, event-loop lateness on 5 ms sleeps, fake carriers' stalls."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [f"      machine load average (1, 5, 15 min) at the end: {load}"] + [
        f"      gen w{w.index}: {w.calls} calls, CPU {w.cpu_s:.1f} s = {100 * w.cpu_s / w.wall_s:.0f}% core, "
        f"loop late worst {w.worst_ms:.1f} ms (at +{w.worst_after_s:.1f} s) p99 {w.p99_ms:.1f} ms, "
        f"carrier_stalls {w.carrier_stalls}"
        for w in run.loads
    ]


@dataclass
class ServerStalls:
    """The server's own stall metrics (app/loop_health.py), read from /metrics."""

    late_over_20ms: float  # event-loop wake-ups more than 20 ms late
    late_total: float
    gc_pauses: dict[str, float]  # by generation
    worst_late_ms: float  # since the server started
    worst_gc_ms: float

    @classmethod
    def read(cls, base: str) -> ServerStalls:
        text = httpx.get(f"{base}/metrics", timeout=10).text
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith(("callbridge_event_loop_lag", "callbridge_gc_pause")):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        total = values.get("callbridge_event_loop_lag_seconds_count", 0.0)
        on_time = values.get('callbridge_event_loop_lag_seconds_bucket{le="0.02"}', 0.0)
        pauses = {g: values.get(f'callbridge_gc_pause_seconds_count{{generation="{g}"}}', 0.0) for g in "012"}
        return cls(
            total - on_time,
            total,
            pauses,
            1000 * values.get("callbridge_event_loop_lag_max_seconds", 0.0),
            1000 * values.get("callbridge_gc_pause_max_seconds", 0.0),
        )

    def since(self, before: ServerStalls) -> str:
        if not self.late_total:  # an older server (--before) without app/loop_health.py's metrics
            return "      server stalls: not in this server's /metrics"
        late = self.late_over_20ms - before.late_over_20ms
        wakes = self.late_total - before.late_total
        gcs = ", ".join(f"gen{g} {self.gc_pauses[g] - before.gc_pauses[g]:.0f}" for g in "012")
        return (
            f"      server stalls: {late:.0f} of {wakes:.0f} 10 ms timers ran > 20 ms late; GC passes {gcs}; "
            f"worst since start: loop {self.worst_late_ms:.0f} ms, GC {self.worst_gc_ms:.1f} ms"
        )


def settle(pid: int) -> int:
    """Wait SETTLE_S for the server to go quiet; its tree RSS (KiB) then."""
    time.sleep(SETTLE_S)
    return tree_rss_kib(pid)


def warmed_up(kind: str, target: Target) -> str:
    """One call before the clock starts (imports, DB, first connections); then the server's idle line."""
    run_workers([WorkerSpec(0, kind, target.webhook_url, 1.0, calls=((1, 0.0),))])
    idle0 = tree_cpu_seconds(target.pid)
    time.sleep(SETTLE_S)
    idle = 100 * (tree_cpu_seconds(target.pid) - idle0) / SETTLE_S
    loop = event_loop_of(target.pid)
    return f"      server: pid {target.pid}, event loop {loop}, idle CPU {idle:.1f}% of one core"


def run_load(args: argparse.Namespace, label: str, target: Target, n: int, notes: list[str]) -> float:
    """N calls at once (with --soak: N slots, each call replaced as it ends, for --soak minutes) against
    `target`; prints the row, `notes`, the server's stalls, each worker's load, the soak's RSS and calls a
    minute, and the profile if asked. Returns the row's ms/call-s."""
    soak_s = 60 * args.soak
    workers = args.workers or math.ceil(n / CALLS_PER_WORKER)
    if soak_s:
        specs = soak_specs(args.kind, target.webhook_url, n, args.seconds, workers, soak_s, args.deflate)
        span, profile_after = (STAGGER_S, soak_s), (soak_s - args.profile) / 2
    else:
        specs = level_specs(args.kind, target.webhook_url, n, args.seconds, workers, args.deflate)
        span = (STAGGER_S + SETUP_S, args.seconds)  # every call is up in it, nominally
        profile_after = STAGGER_S + max(0.0, (args.seconds - STAGGER_S - args.profile) / 2)
    pid = target.pid
    idle = tree_rss_kib(pid)
    profile: list[str] = []
    threads: list[threading.Thread] = []

    def during(t0: float) -> None:
        if args.profile:
            threads.append(profile_later(pid, t0 + profile_after, args.profile, profile))

    stalls = ServerStalls.read(target.metrics_base) if target.metrics_base else None
    with ServerSampler(pid, 0.2 if soak_s else 0.1) as sampler:
        run = run_workers(specs, during)
    for thread in threads:
        thread.join()
    window = (run.t0 + span[0], run.t0 + span[1])
    line, ms = summary_row((label, f"s{n}" if soak_s else str(n)), run, sampler, window, idle, settle(pid), n)
    print("\n".join([line, *notes]))
    if stalls is not None and target.metrics_base:
        print(ServerStalls.read(target.metrics_base).since(stalls))
    print("\n".join(generator_lines(run)), flush=True)
    if soak_s:
        print_rss(sampler, run.t0, soak_s, args.seconds + TAIL_S)
        print_minutes(run, soak_s)
    if profile:
        print(f"      py-spy --gil, {args.profile:g} s mid-{'soak' if soak_s else 'level'} at {n} calls:")
        print("\n".join(f"        {line}" for line in profile), flush=True)
    return ms


def measure(args: argparse.Namespace, server: ServerUnderTest, n: int) -> float:
    """A fresh `server`, warmed up, under one level (or the soak): its ms/call-s."""
    with server.start() as target:
        notes = [warmed_up(args.kind, target)]
        return run_load(args, server.label, target, n, notes)


def compare(args: argparse.Namespace, servers: list[ServerUnderTest], n: int) -> None:
    """Level `n` on each server in turn, --repeat times over, then the ratios of the medians.

    A server that does not start is said so and dropped from `servers` (for the later levels too).
    """
    figures: dict[str, list[float]] = {s.label: [] for s in servers}
    for _ in range(args.repeat):
        for server in list(servers):
            try:
                figures[server.label].append(measure(args, server, n))
            except ServerFailed as exc:
                print(f"{server.label:>7} did not start; left out from here on. {exc}", flush=True)
                servers.remove(server)
            time.sleep(SETTLE_S)
    if line := ratio_line(n, figures, args.repeat):
        print(line, flush=True)


RATIOS = (("after", "before"), ("pipecat", "after"))


def ratio_line(n: int, figures: dict[str, list[float]], repeat: int) -> str:
    """`ratios at N: after/before x, pipecat/after y (medians ms/call-s: ...)`; "" with nothing to compare."""
    medians = {label: statistics.median(ms) for label, ms in figures.items() if ms}
    ratios = [f"{a}/{b} {medians[a] / medians[b]:.2f}" for a, b in RATIOS if a in medians and b in medians]
    if not ratios:
        return ""
    of = f"median of {repeat}" if repeat > 1 else "one run each"
    shown = ", ".join(f"{label} {ms:.2f}" for label, ms in medians.items())
    return f"  ratios at {n} calls: {', '.join(ratios)}  (ms/call-s, {of}: {shown})"


def print_rss(sampler: ServerSampler, t0: float, soak_s: float, call_s: float) -> None:
    """Server RSS every RSS_EVERY_S, and its change from the first sample after warm-up to the end."""
    times = [RSS_EVERY_S * k for k in range(int(soak_s // RSS_EVERY_S) + 1)]
    if times[-1] < soak_s:
        times.append(soak_s)
    rss = [sampler.rss_at(t0 + t) for t in times]
    print(
        "server RSS (MiB): " + ", ".join(f"{t:.0f}s {r / MIB:.1f}" for t, r in zip(times, rss, strict=True))
    )
    warm = next((i for i, t in enumerate(times) if t >= max(RSS_EVERY_S, call_s)), len(times) - 1)
    change = 100 * (rss[-1] - rss[warm]) / rss[warm]
    print(f"RSS change from {times[warm]:.0f}s (after warm-up) to {times[-1]:.0f}s: {change:+.1f}%")


def print_minutes(run: Run, soak_s: float) -> None:
    """Calls completed and failed per minute of the soak, by when they ended (the last: draining)."""
    minutes = math.ceil(soak_s / 60)
    done: Counter[tuple[int, bool]] = Counter()
    for r in run.results:
        done[(min(minutes, int((r.ended - run.t0) // 60)), r.ok)] += 1
    for m in range(minutes + 1):
        label = f"minute {m + 1}" if m < minutes else "drain"
        print(f"{label:>9}: {done[(m, True)]} completed, {done[(m, False)]} failed")


LEGEND = """
window: --calls, from t0 + the start spread + 0.5 s set-up to t0 + --seconds (every call up, nominally);
  --soak, from the last first start to the end of the soak. CPU s = the server tree's user+sys in it;
  ms/call-s = CPU s / call-seconds in it; c/core = 1000 / ms/call-s. all-in = CPU from the first webhook to
  the last call's end / the sum of each call's own duration (setup and teardown in).
p50/p95 = the echo lag per call (RoundTrip, cross-correlation) pooled over the calls, ms. drops = playback
  ticks (20 ms) without agent audio between the first and last echo, summed; d/c = calls with any.
  <0.9 = calls with whole-call correlation under 0.9; min c = the lowest (0: no audio came back).
idle/peak/after = server tree VmRSS, MiB: before, highest in the window, SETTLE_S after;
  KiB/c = (peak - idle) / N. gen = each load-generator worker: CPU, its event loop's lateness on 5 ms
  sleeps, and how often its fake carriers fell over a frame behind (and paused their clocks).
ratios at N calls: after/before and pipecat/after of the median ms/call-s over the --repeat runs."""


def main(args: argparse.Namespace) -> None:
    bf.print_machine(f"concurrent calls: real servers, echo agents, fake {args.kind} carriers in workers")
    rate = KIND_RATES[args.kind]
    print(f"each call: {args.seconds:g} s speech_like at {rate} Hz + {TAIL_S:g} s silence, real time, 20 ms")
    print(f"media stream permessage-deflate offered: {'yes' if args.deflate else 'no'}")
    print(f"starts spread over {STAGGER_S:g} s; at most {CALLS_PER_WORKER} calls per worker by default")
    print("each row: a fresh server process, warmed up by one call\n")
    with contextlib.ExitStack() as stack:
        cluster = Cluster(args.server_workers, args.cluster)
        servers = chosen(stack, args.before, args.peer, cluster, args.kind)
        for server in servers:
            print(f"{server.label:>7}: {server.description}")
        if cluster.shared:
            print(f"callbridge: serve --workers {args.server_workers} on PostgreSQL and Redis")
        print(f"\n{'':14}{' server ':-^60}   {' echo ':-^38}   {' server RSS ':-^27}")
        print(ROW.format(*HEADER), flush=True)
        for n in [args.concurrency] if args.soak else args.calls:
            compare(args, servers, n)
    print(LEGEND)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=sorted(KIND_RATES), default="twilio")
    parser.add_argument("--calls", default="50,100,200,400", help="comma-separated numbers of calls at once")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of caller audio per call")
    parser.add_argument("--workers", type=int, default=0, help=f"default: ≤ {CALLS_PER_WORKER} calls each")
    parser.add_argument(
        "--server-workers", type=int, default=1, help="serve --workers N (N > 1: on PostgreSQL and Redis)"
    )
    parser.add_argument("--cluster", action="store_true", help="on PostgreSQL and Redis even with one worker")
    parser.add_argument("--soak", type=float, default=0.0, help="minutes of churn instead of --calls")
    parser.add_argument("--concurrency", type=int, default=40, help="calls up at once in the soak")
    parser.add_argument("--profile", type=float, default=0.0, help="py-spy seconds mid-level (0: none)")
    parser.add_argument(
        "--before", metavar="REF", help="also a server of REF's code (a git ref), rows labelled `before`"
    )
    parser.add_argument(
        "--peer", choices=["pipecat"], help="also pipecat's Twilio bot (bench/pipecat_twilio_bot.py)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="run the before/after/peer alternation K times per level"
    )
    parser.add_argument(
        "--no-deflate", dest="deflate", action="store_false", help="offer no permessage-deflate"
    )
    args = parser.parse_args()
    args.calls = [int(n) for n in args.calls.split(",")]
    if args.peer and args.kind != "twilio":
        parser.error("--peer pipecat runs Twilio calls only (--kind twilio)")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if not args.soak and args.seconds <= STAGGER_S + SETUP_S:
        parser.error(f"--seconds must exceed {STAGGER_S + SETUP_S:g} (the start spread and set-up)")
    return args


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main(parse_args())
