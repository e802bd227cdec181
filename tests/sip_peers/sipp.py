"""SIPp runs: a committed scenario (or a built-in one) against a peer, bounded by -m, -timeout and a
Python-side deadline, with its message, error, action and statistics logs kept in the run's directory."""

from __future__ import annotations

import contextlib
import csv
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.sip_peers.ports import HOST, free_rtp_port, free_sip_port
from tests.sip_peers.process import PeerProcess, start_peer

SCENARIOS = Path(__file__).parent / "scenarios"
#: sip-tester's pcaps: g711a.pcap (PCMA, 30 ms packets, ~7 s) and dtmf_2833_<digit|star|pound>.pcap.
SIPP_PCAPS = Path("/usr/share/sip-tester")
#: Seconds the Python side waits beyond SIPp's own -timeout before it kills the process group.
DEADLINE_MARGIN = 10.0
#: SIPp's exit codes (sipp(1)).
EXIT_ALL_SUCCESSFUL = 0
EXIT_SOME_FAILED = 1


@dataclass(frozen=True)
class SippOptions:
    """One SIPp run. `scenario` is a file in scenarios/ ("uac_cancel.xml") or a built-in name ("uas")."""

    scenario: str
    port: int = field(default_factory=free_sip_port)
    remote: str | None = None  # "host:port" of the peer (UAC runs)
    service: str = "service"  # the request-URI user (-s)
    transport: str = "udp"  # "udp" | "tcp"
    media_port: int = field(default_factory=free_rtp_port)
    rtp_echo: bool = False
    calls: int = 1  # -m: SIPp exits after this many calls
    rate: float | None = None  # -r calls per second (UAC)
    timeout: float = 30.0  # -timeout (seconds), with -timeout_error
    lost: int | None = None  # -lost percent
    keys: Mapping[str, str] = field(default_factory=dict)  # -key name value: [name] in the scenario
    audio_pcap: Path | None = None  # linked as audio.pcap in the run directory (uac_pcap_xheader.xml)
    extra: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        """Where this SIPp listens, host:port."""
        return f"{HOST}:{self.port}"

    def argv(self) -> list[str]:
        """The SIPp command line; log files are relative to the run directory."""
        scenario = SCENARIOS / self.scenario
        argv = ["sipp", *(["-sf", str(scenario)] if scenario.suffix == ".xml" else ["-sn", self.scenario])]
        if self.remote is not None:
            argv.append(self.remote)
        argv += ["-i", HOST, "-p", str(self.port), "-t", "t1" if self.transport == "tcp" else "u1"]
        argv += ["-mi", HOST, "-mp", str(self.media_port), "-s", self.service, "-m", str(self.calls)]
        argv += ["-nostdin", "-timeout", f"{self.timeout:g}s", "-timeout_error"]
        argv += ["-trace_msg", "-message_file", "messages.log", "-trace_err", "-error_file", "errors.log"]
        argv += ["-trace_stat", "-stf", "stats.csv", "-trace_logs", "-log_file", "actions.log"]
        argv += ["-trace_screen", "-screen_file", "screen.log"]
        if self.rate is not None:
            argv += ["-r", f"{self.rate:g}"]
        if self.rtp_echo:
            argv.append("-rtp_echo")
        if self.lost is not None:
            argv += ["-lost", str(self.lost)]
        for name, value in self.keys.items():
            argv += ["-key", name, value]
        return argv + list(self.extra)


@dataclass(frozen=True)
class SippResult:
    """How a SIPp run ended: its exit code, call counts and logs."""

    exit_code: int
    successful: int
    failed: int
    messages: str  # -trace_msg: every SIP message sent and received
    errors: str  # -trace_err: unexpected messages and failures
    actions: str  # -trace_logs: the scenario's <log> actions
    workdir: Path

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_ALL_SUCCESSFUL and self.failed == 0 and self.successful > 0

    def statuses_received(self) -> list[int]:
        """Status codes of the responses SIPp received, in order (retransmissions included)."""
        return [
            int(code) for code in re.findall(r"message received [^\n]*\n\s*SIP/2\.0 (\d{3})", self.messages)
        ]

    def summary(self) -> str:
        """A few lines to put in an assertion message."""
        return (
            f"sipp exit {self.exit_code}, {self.successful} successful, {self.failed} failed; "
            f"logs in {self.workdir}\n{self.errors[-3000:]}"
        )


@dataclass
class SippRun:
    """A started SIPp: `await run.result()` when it should be done."""

    options: SippOptions
    peer: PeerProcess

    async def result(self, within: float | None = None) -> SippResult:
        """Wait for SIPp to exit (bounded: its -timeout plus a margin, unless `within`) and read its logs."""
        exit_code = await self.peer.wait(within or self.options.timeout + DEADLINE_MARGIN)
        return read_result(self.peer.workdir, exit_code, self.options.calls)

    async def stop(self) -> None:
        await self.peer.stop()


@contextlib.asynccontextmanager
async def sipp(options: SippOptions, workdir: Path) -> AsyncIterator[SippRun]:
    """SIPp running `options` in `workdir` (created); stopped by its PID on the way out, whatever happened."""
    _prepare(options, workdir)
    peer = await start_peer("sipp", options.argv(), workdir)
    try:
        yield SippRun(options, peer)
    finally:
        await peer.stop()


def _prepare(options: SippOptions, workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    if options.audio_pcap is not None:
        link = workdir / "audio.pcap"
        link.unlink(missing_ok=True)
        link.symlink_to(options.audio_pcap)


async def run_sipp(options: SippOptions, workdir: Path) -> SippResult:
    """Run SIPp to its end (bounded) and return the result."""
    async with sipp(options, workdir) as run:
        return await run.result()


def read_result(workdir: Path, exit_code: int, calls: int) -> SippResult:
    """The result from the run directory's logs; counts from stats.csv, else from the exit code."""
    counts = _stat_counts(workdir / "stats.csv")
    if counts is None:
        counts = (calls, 0) if exit_code == EXIT_ALL_SUCCESSFUL else (0, calls)
    elif exit_code != EXIT_ALL_SUCCESSFUL:
        # Calls cut short by the global -timeout are in neither count: they failed.
        counts = (counts[0], max(counts[1], calls - counts[0]))
    return SippResult(
        exit_code=exit_code,
        successful=counts[0],
        failed=counts[1],
        messages=_text(workdir / "messages.log"),
        errors=_text(workdir / "errors.log"),
        actions=_text(workdir / "actions.log"),
        workdir=workdir,
    )


def _stat_counts(path: Path) -> tuple[int, int] | None:
    """(successful, failed) cumulative calls from the last row of SIPp's -trace_stat CSV."""
    if not path.exists():
        return None
    rows = list(csv.DictReader(path.read_text(errors="replace").splitlines(), delimiter=";"))
    if not rows:
        return None
    last = rows[-1]
    return int(last["SuccessfulCall(C)"]), int(last["FailedCall(C)"])


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""
