"""CPU per call-second of the playout machinery: a task and a timer per call per frame vs the media clock.

N playouts on one uvloop loop, each sending to a sink that costs nothing, are fed in real time for a fixed
wall-clock window; the process's CPU time (time.process_time) over the window, less the same run's feeder
alone, is divided by the call-seconds. Two feeds:
- echo: one 20 ms μ-law frame per call every 20 ms (the calls' phases spread over the 20 ms), as an echo
  agent returns the caller's audio: the queue runs dry after every frame.
- burst: one second of audio per call every second (phases spread), as a TTS agent runs ahead: every frame
  but the lead's is paced.
Modes: `task`, today's path (a sink without `send_audio_now`: the playout's own task, woken or sleeping
per frame); `clock`, the same Playout on a sink with `send_audio_now`, driven by the loop's media clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable

import uvloop

from app.calls.playout import Playout
from app.media.formats import PCMU_8K
from app.providers.twilio import TwilioFraming

FRAME_S = 0.02
FRAME = b"\xff" * 160  # 20 ms of μ-law
BURST = b"\xff" * 8000  # one second


class FreeSink:
    """A call transport that costs nothing (today's path: no `send_audio_now`)."""

    def __init__(self) -> None:
        self.frames = 0

    async def send_audio(self, payload: bytes) -> None:
        self.frames += 1

    async def send_mark(self, name: str) -> None:
        pass

    async def send_clear(self) -> None:
        pass


class FreeImmediateSink(FreeSink):
    """The same, able to write at once: its playout is driven by the media clock."""

    def send_audio_now(self, payload: bytes) -> bool:
        self.frames += 1
        return True


class Feeder:
    """Feeds one call on an absolute cadence (no drift), one timer per feed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, target: Callable[[bytes], object], feed: str) -> None:
        self._loop = loop
        self._target = target
        self._chunk, self._period = (FRAME, FRAME_S) if feed == "echo" else (BURST, 1.0)
        self._next = 0.0

    def start(self, at: float) -> None:
        self._next = at
        self._loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._target(self._chunk)
        self._next += self._period
        self._loop.call_at(self._next, self._fire)


async def measure(mode: str, calls: int, feed: str, seconds: float, warmup_s: float) -> tuple[float, int]:
    """CPU seconds over the window and frames sent in it, for `mode` (`feeder`: the feeder alone)."""
    loop = asyncio.get_running_loop()
    rules = TwilioFraming().rules
    tasks: list[asyncio.Task[None]] = []
    sinks: list[FreeSink] = []
    period = FRAME_S if feed == "echo" else 1.0
    start = loop.time() + 0.1
    for i in range(calls):
        if mode == "feeder":
            target: Callable[[bytes], object] = len
        else:
            sink = FreeImmediateSink() if mode == "clock" else FreeSink()
            playout = Playout(sink, PCMU_8K, rules, lead_ms=80)
            tasks.append(asyncio.create_task(playout.run()))
            sinks.append(sink)
            target = playout.enqueue
        Feeder(loop, target, feed).start(start + period * i / calls)
    await asyncio.sleep(0.1 + warmup_s)
    frames_before = sum(s.frames for s in sinks)
    cpu_before = time.process_time()
    await asyncio.sleep(seconds)
    cpu = time.process_time() - cpu_before
    frames = sum(s.frames for s in sinks) - frames_before
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return cpu, frames


def run_one(mode: str, calls: int, feed: str, seconds: float, warmup_s: float) -> tuple[float, int]:
    """One measurement on a fresh uvloop loop (so no timers are left over from the last)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(measure(mode, calls, feed, seconds, warmup_s))


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--calls", default="100,400", help="comma-separated numbers of playouts")
    parser.add_argument("--feeds", default="echo,burst")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured wall-clock window per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each mode, alternated")
    args = parser.parse_args()
    print(f"uvloop {uvloop.__version__}, window {args.seconds:g} s, {args.repeats} runs each (median; range)")
    print("ms of CPU per call-second of the playout machinery (the feeder's own cost taken off)")
    print(f"{'feed':>6} {'calls':>6} | {'task':>18} | {'clock':>18} | {'ratio':>6} | frames/call-s")
    for feed in args.feeds.split(","):
        for calls in (int(n) for n in args.calls.split(",")):
            results: dict[str, list[float]] = {"task": [], "clock": []}
            frame_rates: dict[str, list[float]] = {"task": [], "clock": []}
            for _ in range(args.repeats):
                for mode in ("task", "clock"):
                    feeder_cpu, _ = run_one("feeder", calls, feed, args.seconds, args.warmup)
                    cpu, frames = run_one(mode, calls, feed, args.seconds, args.warmup)
                    call_s = calls * args.seconds
                    results[mode].append((cpu - feeder_cpu) * 1000 / call_s)
                    frame_rates[mode].append(frames / call_s)
            cells = [
                f"{statistics.median(results[m]):6.3f} ({min(results[m]):.3f}-{max(results[m]):.3f})"
                for m in ("task", "clock")
            ]
            ratio = statistics.median(results["task"]) / max(statistics.median(results["clock"]), 1e-9)
            rates = ", ".join(f"{statistics.median(frame_rates[m]):.1f}" for m in ("task", "clock"))
            print(f"{feed:>6} {calls:>6} | {cells[0]:>18} | {cells[1]:>18} | {ratio:5.1f}x | {rates}")


if __name__ == "__main__":
    main()
