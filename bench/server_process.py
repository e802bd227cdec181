"""A real `callbridge serve` subprocess for the call benchmarks, and its CPU and memory from /proc.

Shared by concurrent_calls.py, sip_calls.py and outbound_calls.py. CPU and RSS are summed over the
server's process tree (the serve process and every live descendant), so a worker or helper process the
server might start is counted too.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

API_KEY = "bench-key-0123456789"
ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "bench-twilio-auth-token"
PLIVO_AUTH_ID = "MA" + "0" * 18
PLIVO_AUTH_TOKEN = "bench-plivo-auth-token"
TELNYX_API_KEY = "bench"
TELNYX_ACCOUNT_SID = "ACbench-telnyx"  # the TeXML account (its Calls list reconciles unknown dials)
TELNYX_APPLICATION_SID = "1684641123236054244"  # the TeXML application outgoing calls are placed through
TELNYX_KEY_SEED = bytes(range(32))  # the fake Telnyx's Ed25519 private key, the same in every process
SAMPLE_S = 0.05


def telnyx_signing_key() -> Ed25519PrivateKey:
    """The fake Telnyx's signing key (its public half is imported by `setup`)."""
    return Ed25519PrivateKey.from_private_bytes(TELNYX_KEY_SEED)


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat from field 3 (state) on; the command name may hold spaces and parentheses."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """user + sys CPU time of `pid` (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_pids(root: int) -> list[int]:
    """`root` and every live descendant of it (from the parent pid in each /proc/<pid>/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                children.setdefault(int(_stat_fields(int(entry))[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def tree_cpu_seconds(root: int) -> float:
    """user + sys of the tree, with the reaped children's (cutime + cstime) so none is lost."""
    total = 0
    for pid in tree_pids(root):
        with contextlib.suppress(OSError):
            total += sum(int(v) for v in _stat_fields(pid)[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def tree_rss_kib(root: int) -> int:
    """VmRSS summed over the tree, KiB (/proc/<pid>/status)."""
    total = 0
    for pid in tree_pids(root):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status", encoding="ascii") as f:
            total += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
    return total


def event_loop_of(pid: int) -> str:
    """ "uvloop" when the process has uvloop's extension mapped, else "asyncio"."""
    with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
        return "uvloop" if any("uvloop" in line for line in f) else "asyncio"


class ServerSampler:
    """Samples the server tree's CPU seconds and RSS every `interval` on a thread: (monotonic, cpu, KiB)."""

    def __init__(self, pid: int, interval: float = SAMPLE_S) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ServerSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        self.samples.append((time.monotonic(), tree_cpu_seconds(self.pid), tree_rss_kib(self.pid)))

    def _run(self) -> None:
        while True:
            self._sample()
            if self._stop.wait(self.interval):
                self._sample()
                return

    def at(self, moment: float) -> float:
        """CPU seconds at `moment`, interpolated between the samples around it."""
        before = max((s for s in self.samples if s[0] <= moment), default=self.samples[0])
        after = min((s for s in self.samples if s[0] >= moment), default=self.samples[-1])
        if after[0] == before[0]:
            return before[1]
        share = (moment - before[0]) / (after[0] - before[0])
        return before[1] + share * (after[1] - before[1])

    def rss_at(self, moment: float) -> int:
        """RSS (KiB) of the last sample at or before `moment`."""
        return max((s for s in self.samples if s[0] <= moment), default=self.samples[0])[2]

    def peak_rss(self, start: float, end: float) -> int:
        """The highest RSS (KiB) sampled in [start, end]."""
        return max((s[2] for s in self.samples if start <= s[0] <= end), default=0)


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(process: subprocess.Popen[bytes], ready: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    """Poll `ready` (HTTP errors count as not yet) until it holds: True; False if `process` exits or
    `timeout_s` passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if ready():
                return True
        if process.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def run_server(
    serve_args: tuple[str, ...] = (), code_dir: str | None = None, **overrides: str
) -> Iterator[tuple[str, int]]:
    """`python -m app.cli serve [serve_args]` on a free loopback port with a temp data dir: yields (base
    URL, pid).

    `code_dir`: a checkout whose `app/` the server imports (PYTHONPATH), e.g. an older commit's worktree;
    default: whatever `app` this interpreter's PYTHONPATH and installs give.
    `overrides` are CALLBRIDGE_* settings without the prefix (`DATABASE_URL="postgresql+asyncpg://..."`).
    """
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="callbridge-bench-") as workdir:
        drop = ("CALLBRIDGE_DATABASE_URL", "CALLBRIDGE_SECRET_KEY")  # embedded SQLite, generated secret
        env = {k: v for k, v in os.environ.items() if k not in drop}
        settings = {"PORT": str(port), "PUBLIC_URL": base_url, "API_KEYS": API_KEY, "LOG_LEVEL": "warning"}
        settings |= {"DATA_DIR": f"{workdir}/data", **overrides}
        env |= {f"CALLBRIDGE_{k}": v for k, v in settings.items()}
        if code_dir is not None:
            env["PYTHONPATH"] = code_dir
        log_path = Path(workdir) / "server.log"
        with log_path.open("wb") as log:
            cmd = [sys.executable, "-m", "app.cli", "serve", *serve_args]
            process = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            if not wait_ready(process, lambda: httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200):
                raise RuntimeError(f"callbridge did not start:\n{log_path.read_text(errors='replace')}")
            yield base_url, process.pid
        finally:
            stop_process(process)
            report_server_errors(log_path)
            if keep := os.environ.get("BENCH_SERVER_LOG"):
                shutil.copyfile(log_path, keep)  # the whole log, e.g. with CALLBRIDGE_STALL_TRACE_MS


#: Server log lines worth showing after a run (everything else is warnings about the load itself).
ERROR_MARKERS = (" ERROR ", "Traceback", "Error:", "Exception")


def report_server_errors(log_path: Path, limit: int = 80) -> None:
    """Print the server log's errors (and the tracebacks after them) to stderr, at most `limit` lines."""
    lines = log_path.read_text(errors="replace").splitlines()
    shown = [line for line in lines if line.startswith(" ") or any(mark in line for mark in ERROR_MARKERS)]
    if shown:
        print(f"server log: {len(shown)} error lines, the first {min(limit, len(shown))}:", file=sys.stderr)
        print("\n".join(shown[:limit]), file=sys.stderr)


async def setup(
    base_url: str, api_base_urls: Mapping[str, str] | None = None, providers: Collection[str] = ()
) -> str:
    """Import Twilio, Telnyx and Plivo credentials (only `providers`' when given) and create an echo agent;
    returns its id.

    `api_base_urls`: each provider's REST API to dial through (the fake ones of app/simulator/*_api.py).
    """
    public_key = telnyx_signing_key().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    configs = {
        "twilio": {"accountSid": ACCOUNT_SID, "authToken": AUTH_TOKEN},
        "telnyx": {
            "apiKey": TELNYX_API_KEY,
            "publicKey": base64.b64encode(public_key).decode(),
            "accountSid": TELNYX_ACCOUNT_SID,
            "applicationSid": TELNYX_APPLICATION_SID,
        },
        "plivo": {"authId": PLIVO_AUTH_ID, "authToken": PLIVO_AUTH_TOKEN},
    }
    urls = api_base_urls or {}
    async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": API_KEY}, timeout=10) as api:
        for provider, body in configs.items():
            if providers and provider not in providers:
                continue  # e.g. an older server, from before that provider
            body = {**body, "callCreationAllowAllAgents": True}
            if provider in urls:
                body["apiBaseUrl"] = urls[provider]
            (await api.post(f"/api/telephony_configs/{provider}", json=body)).raise_for_status()
        return (await api.post("/api/agents", json={"name": "load"})).raise_for_status().json()["agentId"]


#: The test PostgreSQL server (trust auth), as the tests use it.
POSTGRES_URL = os.environ.get(
    "CALLBRIDGE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


#: The Redis the cluster benchmarks use (each run under a prefix of its own).
REDIS_URL = os.environ.get("CALLBRIDGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@contextlib.contextmanager
def cluster_settings() -> Iterator[dict[str, str]]:
    """Settings for several instances (or workers) sharing a scratch PostgreSQL database and Redis."""
    with scratch_postgres() as database_url:
        yield {
            "DATABASE_URL": database_url,
            "REDIS_URL": REDIS_URL,
            "REDIS_PREFIX": f"cbbench-{uuid.uuid4().hex[:8]}",
            "SECRET_KEY": "bench-cluster-secret-key",
        }


@contextlib.contextmanager
def scratch_postgres(prefix: str = "callbridge_bench") -> Iterator[str]:
    """A new, empty database on POSTGRES_URL's server, dropped afterwards: its URL. Usable inside a
    running event loop too (the admin statements run on a thread of their own)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin(sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()
