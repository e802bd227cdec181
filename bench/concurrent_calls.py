"""Concurrent calls per core: N simulated Twilio calls against a real `callbridge serve` subprocess.

Run: `.venv/bin/python bench/concurrent_calls.py [--calls 1,10,25,50] [--seconds 8]`. Prints numbers;
asserts nothing. bench/README.md says what each number means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from app.simulator.audio import speech_like
from app.simulator.twilio import CallReport, CallScript, FakeTwilio

API_KEY = "bench-key-0123456789"
ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "bench-twilio-auth-token"
TAIL_SECONDS = 1.0
STAGGER_SECONDS = 1.0
# calls | server: wall, call-s, CPU, %core, ms/call-s, calls/core | bench: CPU, %core, stall | quality
ROW = "{:>5} {:>7} {:>7} {:>6} {:>6} {:>9} {:>10} | {:>6} {:>5} {:>6} | {:>8} {:>7} {:>4}"
HEADER = ["calls", "wall s", "call-s", "CPU s", "%core", "ms/call-s", "calls/core"]
HEADER += ["CPU s", "%core", "stall", "min corr", "max lag", "gaps"]


def cpu_seconds(pid: int) -> float:
    """user + sys CPU time of `pid` (fields 14 and 15 of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def print_machine() -> None:
    """Print the title, platform, CPU model and Python."""
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    print("callbridge concurrent calls: real server subprocess, echo agent, fake Twilio over WebSockets")
    print(f"platform: {platform.platform()}")
    print(f"     cpu: {cpu} ({os.cpu_count()} logical CPUs)")
    print(f"  python: {platform.python_implementation()} {platform.python_version()}")


@contextlib.contextmanager
def run_server() -> Iterator[tuple[str, int]]:
    """`python -m app.cli serve` on a free loopback port with a temp data dir: yields (base URL, pid)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="callbridge-bench-") as workdir:
        drop = ("CALLBRIDGE_DATABASE_URL", "CALLBRIDGE_SECRET_KEY")  # embedded SQLite, generated secret
        env = {k: v for k, v in os.environ.items() if k not in drop}
        settings = {"PORT": str(port), "PUBLIC_URL": base_url, "API_KEYS": API_KEY, "LOG_LEVEL": "warning"}
        env |= {f"CALLBRIDGE_{k}": v for k, v in {**settings, "DATA_DIR": f"{workdir}/data"}.items()}
        log_path = Path(workdir) / "server.log"
        with log_path.open("wb") as log:
            cmd = [sys.executable, "-m", "app.cli", "serve"]
            process = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                        break
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"callbridge did not start:\n{log_path.read_text(errors='replace')}")
                time.sleep(0.1)
            yield base_url, process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


async def setup(base_url: str) -> str:
    """Import the Twilio credentials and create an echo agent; returns its id."""
    async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": API_KEY}, timeout=10) as api:
        body = {"accountSid": ACCOUNT_SID, "authToken": AUTH_TOKEN, "callCreationAllowAllAgents": True}
        (await api.post("/api/telephony_configs/twilio", json=body)).raise_for_status()
        return (await api.post("/api/agents", json={"name": "load"})).raise_for_status().json()["agentId"]


async def timed_call(fake: FakeTwilio, agent_id: str, delay: float, audio: bytes) -> tuple[CallReport, float]:
    """Wait `delay`, place one call; returns its report and how long it was up (webhook to hangup)."""
    await asyncio.sleep(delay)
    start = time.monotonic()
    report = await fake.call(agent_id, CallScript(audio=audio, tail_seconds=TAIL_SECONDS))
    return report, time.monotonic() - start


async def watch_loop(stalls: list[float]) -> None:
    """Record how late this process's event loop wakes from 5 ms sleeps (the fake carriers' jitter)."""
    while True:
        start = time.monotonic()
        await asyncio.sleep(0.005)
        stalls.append(time.monotonic() - start - 0.005)


async def run_level(fake: FakeTwilio, agent_id: str, pid: int, n: int, seconds: float) -> None:
    """N calls at once (starts spread over STAGGER_SECONDS); prints one row: load and quality."""
    audios = [speech_like(seconds, seed=1000 * n + i) for i in range(n)]
    cpu0, own0, wall0 = cpu_seconds(pid), time.process_time(), time.monotonic()
    stalls: list[float] = []
    watcher = asyncio.create_task(watch_loop(stalls))
    tasks = [timed_call(fake, agent_id, STAGGER_SECONDS * i / n, audios[i]) for i in range(n)]
    results = await asyncio.gather(*tasks)
    watcher.cancel()
    wall, cpu, own = time.monotonic() - wall0, cpu_seconds(pid) - cpu0, time.process_time() - own0
    call_seconds = sum(duration for _, duration in results)
    trips = [r.round_trip for r, _ in results]
    min_corr = min((t.correlation if t else 0.0) for t in trips)  # 0: a call got no audio back
    max_lag = max((t.lag_ms for t in trips if t), default=float("nan"))
    gaps = sum(r.underrun_ticks for r, _ in results)
    server = [f"{wall:.2f}", f"{call_seconds:.1f}", f"{cpu:.2f}", f"{100 * cpu / wall:.1f}%"]
    server += [f"{1000 * cpu / call_seconds:.2f}", f"{call_seconds / cpu:.0f}"]
    bench = [f"{own:.2f}", f"{100 * own / wall:.0f}%", f"{1000 * max(stalls):.0f}"]
    row = [n, *server, *bench, f"{min_corr:.4f}", f"{max_lag:.0f}", gaps]
    print(ROW.format(*row))


async def main(levels: list[int], seconds: float) -> None:
    print_machine()
    print(f"each call: {seconds:g} s speech_like audio + {TAIL_SECONDS:g} s silence, real time, 20 ms frames")
    print(f"N calls start over {STAGGER_SECONDS:g} s; call-s = sum of each call's own duration")
    print("caveat: the fake carriers run in this bench process on the same machine and compete for CPU\n")
    with run_server() as (base_url, pid):
        agent_id = await setup(base_url)
        fake = FakeTwilio(base_url, ACCOUNT_SID, AUTH_TOKEN)
        await timed_call(fake, agent_id, 0.0, speech_like(1.0))  # warm-up: imports, DB, first connections
        idle0 = cpu_seconds(pid)
        await asyncio.sleep(2.0)
        print(f"server idle CPU: {100 * (cpu_seconds(pid) - idle0) / 2.0:.1f}% of one core\n")
        print(f"{'':6}{' server process ':-^50}   {' bench ':-^19}   {' quality ':-^21}")
        print(ROW.format(*HEADER))
        for n in levels:
            await run_level(fake, agent_id, pid, n, seconds)
    print("\nbench = this process (all the fake carriers); stall = its event loop's worst lateness, ms.")
    print("calls/core = call-s / server CPU s: how many such calls would use exactly one server core.")
    print("gaps = 20 ms ticks without agent audio between first and last echo, summed over all calls.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="1,10,25,50", help="comma-separated numbers of concurrent calls")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds of caller audio per call")
    args = parser.parse_args()
    asyncio.run(main([int(n) for n in args.calls.split(",")], args.seconds))
