"""A server under test for the call benchmarks: callbridge (today's code, or a git ref's), or pipecat's bot.

Each `ServerUnderTest` starts a fresh server process with `start()`, a context manager yielding a `Target`:
the voice-webhook URL the fake carriers POST to, and the pid whose process tree is sampled. A server that
cannot start raises `ServerFailed`, with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
from server_process import cluster_settings, free_port, run_server, setup, stop_process, wait_ready

BENCH_DIR = Path(__file__).resolve().parent
PIPECAT_BOT = BENCH_DIR / "pipecat_twilio_bot.py"
START_TIMEOUT_S = 30.0


class ServerFailed(Exception):
    """The server under test did not start (or its set-up failed); the message says why."""


@dataclass(frozen=True)
class Target:
    """A started server, as the fake carriers and the samplers see it."""

    webhook_url: str  # the incoming-call webhook the fake carriers POST (it answers with the stream's XML)
    pid: int  # the root of the process tree whose CPU and RSS are sampled
    metrics_base: str | None = None  # callbridge's base URL, for /metrics; None: the server has none


class ServerUnderTest(ABC):
    """One kind of server to measure; `label` names its rows."""

    label: str
    description: str

    @abstractmethod
    def start(self) -> contextlib.AbstractContextManager[Target]:
        """A fresh server process, stopped when the block ends."""


@dataclass(frozen=True)
class Cluster:
    """How callbridge is served: `serve --workers N`; on PostgreSQL and Redis when `shared` or N > 1."""

    workers: int = 1
    on_postgres: bool = False

    @property
    def shared(self) -> bool:
        return self.on_postgres or self.workers > 1

    def serve_args(self) -> tuple[str, ...]:
        return ("--workers", str(self.workers)) if self.workers > 1 else ()


class Callbridge(ServerUnderTest):
    """`python -m app.cli serve` with an echo agent; `code_dir`: a checkout whose `app/` it runs."""

    def __init__(
        self, label: str, description: str, code_dir: str | None, cluster: Cluster, provider: str
    ) -> None:
        self.label, self.description = label, description
        self.code_dir, self.cluster, self.provider = code_dir, cluster, provider

    @contextlib.contextmanager
    def start(self) -> Iterator[Target]:
        with contextlib.ExitStack() as stack:
            try:
                settings = stack.enter_context(cluster_settings()) if self.cluster.shared else {}
                serving = run_server(self.cluster.serve_args(), code_dir=self.code_dir, **settings)
                base, pid = stack.enter_context(serving)
                agent = asyncio.run(setup(base, providers=(self.provider,)))
            except (RuntimeError, OSError, httpx.HTTPError) as exc:
                raise ServerFailed(f"{type(exc).__name__}: {exc}") from exc
            yield Target(f"{base}/api/agents/{agent}/telephony_xml", pid, base)


class Pipecat(ServerUnderTest):
    """bench/pipecat_twilio_bot.py in its own process (it never imports `app/`)."""

    label = "pipecat"

    def __init__(self) -> None:
        self.description = f"pipecat Twilio bot ({PIPECAT_BOT.name}): {pipecat_version()}, 8 kHz echo"

    @contextlib.contextmanager
    def start(self) -> Iterator[Target]:
        port = free_port()
        webhook = f"http://127.0.0.1:{port}/twiml"
        with tempfile.TemporaryFile() as log:
            cmd = [sys.executable, str(PIPECAT_BOT), "--port", str(port)]
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of callbridge's
            process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

            def ready() -> bool:
                return httpx.post(webhook, data={"CallSid": "CAready"}, timeout=1).status_code == 200

            try:
                if not wait_ready(process, ready, START_TIMEOUT_S):
                    raise failed_to_start(process, log)
                yield Target(webhook, process.pid)
            finally:
                stop_process(process)


def pipecat_version() -> str:
    """pipecat-ai's installed version, or why it is missing."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"pipecat-ai {version('pipecat-ai')}"
    except PackageNotFoundError:
        return "pipecat-ai not installed"


def failed_to_start(process: subprocess.Popen[bytes], log: IO[bytes]) -> ServerFailed:
    """ServerFailed with the tail of the process's log."""
    log.seek(0)
    tail = log.read().decode(errors="replace")[-3000:]
    return ServerFailed(f"{' '.join(map(str, process.args))} did not start:\n{tail}")


@contextlib.contextmanager
def ref_checkout(ref: str) -> Iterator[str]:
    """A detached `git worktree` of `ref` (of the repository this bench lives in) in a temp dir: its path.

    Removed afterwards, also on error. ServerFailed if git cannot make it (an unknown ref).
    """
    repo = BENCH_DIR.parent
    with tempfile.TemporaryDirectory(prefix="callbridge-before-") as parent:
        path = str(Path(parent) / "tree")
        added = git(repo, "worktree", "add", "--detach", path, ref)
        if added.returncode != 0:
            raise ServerFailed(f"git worktree add {ref}: {added.stderr.strip()}")
        try:
            yield path
        finally:
            if git(repo, "worktree", "remove", "--force", path).returncode != 0:
                git(repo, "worktree", "prune")


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)


def describe(repo_ref: str) -> str:
    """`<short sha> <subject>` of a ref, for the header."""
    done = git(BENCH_DIR.parent, "log", "-1", "--format=%h %s", repo_ref)
    return done.stdout.strip()[:70] if done.returncode == 0 else repo_ref


def chosen(
    stack: contextlib.ExitStack, before: str | None, peer: str | None, cluster: Cluster, provider: str
) -> list[ServerUnderTest]:
    """The servers to alternate, in order: [before,] after[, pipecat], callbridge's with `provider`'s
    credentials imported. A `before` ref git cannot check out is left out, with the reason printed."""
    servers: list[ServerUnderTest] = []
    if before:
        try:
            code_dir = stack.enter_context(ref_checkout(before))
        except ServerFailed as exc:
            print(f"before: left out: {exc}", flush=True)
        else:
            at = f"callbridge at {describe(before)}"
            servers.append(Callbridge("before", at, code_dir, cluster, provider))
    at = f"callbridge at {describe('HEAD')} (this checkout)"
    servers.append(Callbridge("after", at, None, cluster, provider))
    if peer == "pipecat":
        servers.append(Pipecat())
    return servers
