"""`callbridge serve --workers N`: N instances on one machine, sharing one listening socket.

Each worker is a whole `callbridge serve` process (its own event loop, call sessions and cluster instance
id) accepting connections on the socket this supervisor bound, so the kernel spreads new connections over
them; a call's stream lands on one worker and control for it reaches that worker through Redis, exactly as
between machines. That is why workers need CALLBRIDGE_REDIS_URL, and why SIP is not served by workers (a SIP
dialog and its RTP are tied to the one process that holds the port: run SIP instances one per address).

The supervisor forwards SIGTERM/SIGINT to every worker (each drains; a second signal exits at once), and
starts a worker again when one dies on its own.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

from app.settings import Settings

log = logging.getLogger(__name__)

#: Supervisor poll interval, and the wait before a worker that died is started again (s).
POLL_S = 0.2
RESTART_DELAY_S = 1.0


def workers_problem(settings: Settings, workers: int) -> str | None:
    """Why `--workers N` cannot run with these settings, or None."""
    if workers < 1:
        return "--workers must be at least 1"
    if workers > 1 and not settings.redis_url:
        return (
            "--workers needs CALLBRIDGE_REDIS_URL: the workers find each other's calls through Redis "
            "(and share a database: PostgreSQL is the one to use)"
        )
    if workers > 1 and settings.sip_listen:
        return "--workers cannot serve SIP (a SIP port belongs to one process): one SIP instance per address"
    return None


def listening_socket(host: str, port: int) -> socket.socket:
    """The socket every worker accepts on (inherited by file descriptor)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@dataclass
class WorkerSupervisor:
    """Runs `count` workers on `sock` until a signal, then waits for their drains."""

    sock: socket.socket
    count: int
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    stopping: bool = False

    def start_worker(self, index: int) -> subprocess.Popen[bytes]:
        fd = self.sock.fileno()
        command = [sys.executable, "-m", "app.cli", "serve", "--fd", str(fd)]
        process = subprocess.Popen(command, pass_fds=(fd,))
        log.info("worker %d started (pid %d)", index, process.pid)
        return process

    def run(self) -> int:
        """Serve until every worker has exited after a signal; the workers' worst exit status."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._forward)
        self.workers = [self.start_worker(i) for i in range(self.count)]
        while True:
            time.sleep(POLL_S)
            if self.stopping:
                if all(worker.poll() is not None for worker in self.workers):
                    return max((worker.returncode for worker in self.workers), default=0)
                continue
            for index, worker in enumerate(self.workers):
                if worker.poll() is None or self.stopping:
                    continue
                code = worker.returncode
                log.error("worker %d (pid %d) exited %d; starting it again", index, worker.pid, code)
                time.sleep(RESTART_DELAY_S)
                if not self.stopping:
                    self.workers[index] = self.start_worker(index)

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signum)
