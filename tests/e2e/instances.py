"""Real `callbridge serve` instances that tests start, kill and restart (several on one database)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import RunningServer, run_server


@dataclass
class Instance:
    """One `callbridge serve` on the shared database, killed and restarted (a new process, port and log)."""

    root: Path
    env: dict[str, str]
    name: str
    server: RunningServer | None = None
    runs: int = 0
    logs: list[str] = field(default_factory=list)
    _context: contextlib.AbstractContextManager[RunningServer] | None = None

    async def start(self) -> RunningServer:
        self.runs += 1
        workdir = self.root / f"{self.name}-run{self.runs}"
        workdir.mkdir(parents=True)
        self._context = run_server(workdir, **self.env)
        self.server = await asyncio.to_thread(self._context.__enter__)  # the fake API keeps answering
        return self.server

    async def kill(self) -> None:
        """SIGKILL: no drain, no cleanup; the claims it held stay until their leases end."""
        assert self.server is not None and self._context is not None
        self.server.process.kill()
        await asyncio.to_thread(self.server.process.wait)
        self.logs.append(self.server.log())
        await asyncio.to_thread(self._context.__exit__, None, None, None)
        self.server = self._context = None

    async def stop(self) -> None:
        if self.server is not None and self._context is not None:
            self.logs.append(self.server.log())
            await asyncio.to_thread(self._context.__exit__, None, None, None)
            self.server = self._context = None

    def reconciled(self) -> list[tuple[str, str]]:
        """What each reconciliation of an unknown dial found, and how (from the instances' logs)."""
        found = r"dial left unknown: (\w+) \((.*)\)$"
        return [m.groups() for log in self.logs for m in re.finditer(found, log, re.MULTILINE)]
