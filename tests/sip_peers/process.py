"""A peer subprocess in its own process group, its output in files, always bounded and stopped by its PID."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


@dataclass
class PeerProcess:
    """A running peer: `wait()` for its exit within a deadline, `stop()` it (its whole group)."""

    name: str
    process: asyncio.subprocess.Process
    workdir: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stdout_path(self) -> Path:
        return self.workdir / f"{self.name}.stdout"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / f"{self.name}.stderr"

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    async def wait(self, within: float) -> int:
        """The exit code; past `within` seconds the group is killed and TimeoutError raised."""
        try:
            async with asyncio.timeout(within):
                return await self.process.wait()
        except TimeoutError:
            await self.stop()
            raise TimeoutError(f"{self.name} (pid {self.pid}) still ran after {within:.0f} s") from None

    async def stop(self, grace: float = 3.0) -> int:
        """SIGTERM to the process group (by its PID), SIGKILL after `grace` seconds; the exit code."""
        if self.running:
            self._signal_group(signal.SIGTERM)
            try:
                async with asyncio.timeout(grace):
                    await self.process.wait()
            except TimeoutError:
                self._signal_group(signal.SIGKILL)
                await self.process.wait()
        assert self.process.returncode is not None
        return self.process.returncode

    def _signal_group(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signum)

    def output(self) -> str:
        """stdout and stderr as text (for failure messages)."""
        parts = [path.read_text(errors="replace") for path in (self.stdout_path, self.stderr_path)]
        return "\n".join(part for part in parts if part)


async def start_peer(name: str, argv: list[str], workdir: Path) -> PeerProcess:
    """Start `argv` in `workdir` (created), in a new session so stop() reaches its children too."""
    out, err = _output_files(name, workdir)
    with out, err:
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=workdir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    return PeerProcess(name, process, workdir)


def _output_files(name: str, workdir: Path) -> tuple[BinaryIO, BinaryIO]:
    workdir.mkdir(parents=True, exist_ok=True)
    return (workdir / f"{name}.stdout").open("wb"), (workdir / f"{name}.stderr").open("wb")
