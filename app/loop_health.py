"""The serving process's event loop under load: start-up objects kept out of the garbage collector's
full passes, every stall measured (garbage-collection pauses and late wake-ups) for `/metrics`, and, when
asked for, where the loop was when it stalled (`StallTracer`).

A full collection walks every tracked object; after start-up that is ~150,000 of them (FastAPI, pydantic,
SQLAlchemy, numpy), a 100+ ms pause that made every live call's playout run dry at once. Objects alive
when serving starts live as long as the process, so `gc.freeze()` moves them where no pass looks.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import threading
import time
import traceback
from collections import deque
from typing import Any

from prometheus_client import Gauge, Histogram

from app.metrics import REGISTRY

log = logging.getLogger(__name__)

#: Buckets around what a call can absorb: the playout lead is 80 ms, a frame 20 ms.
STALL_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.08, 0.1, 0.2, 0.5, 1.0)
#: How often the probe wakes: any stall longer than this delays a wake-up, so none goes unseen.
PROBE_INTERVAL_S = 0.01

GC_PAUSES = Histogram(
    "callbridge_gc_pause_seconds",
    "Garbage-collection pauses, by generation",
    ["generation"],
    buckets=STALL_BUCKETS,
    registry=REGISTRY,
)
GC_PAUSE_MAX = Gauge(
    "callbridge_gc_pause_max_seconds", "The longest garbage-collection pause since start", registry=REGISTRY
)
LOOP_LAG = Histogram(
    "callbridge_event_loop_lag_seconds",
    f"How late the event loop ran a {PROBE_INTERVAL_S * 1000:g} ms timer (a stall of the media loop)",
    buckets=STALL_BUCKETS,
    registry=REGISTRY,
)
LOOP_LAG_MAX = Gauge(
    "callbridge_event_loop_lag_max_seconds",
    "The latest the event loop ran a timer since start",
    registry=REGISTRY,
)


def freeze_startup_objects() -> int:
    """Collect once, then move every surviving object out of the collector's reach; returns how many."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class GcPauseTimer:
    """Times each garbage collection (a `gc.callbacks` entry) into GC_PAUSES and GC_PAUSE_MAX."""

    def __init__(self) -> None:
        self._started = 0.0
        self._children = {generation: GC_PAUSES.labels(str(generation)) for generation in range(3)}
        self.longest = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        self._children[info["generation"]].observe(pause)
        if pause > self.longest:
            self.longest = pause
            GC_PAUSE_MAX.set(pause)

    def install(self) -> None:
        gc.callbacks.append(self)

    def remove(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self)


class LoopLagProbe:
    """A task that sleeps PROBE_INTERVAL_S again and again and records how late it woke (LOOP_LAG)."""

    def __init__(self, interval_s: float = PROBE_INTERVAL_S) -> None:
        self._interval = interval_s
        self._task: asyncio.Task[None] | None = None
        self.longest = 0.0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag-probe")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self._interval
        while True:
            due = loop.time() + interval
            await asyncio.sleep(interval)
            lag = max(0.0, loop.time() - due)
            LOOP_LAG.observe(lag)
            if lag > self.longest:
                self.longest = lag
                LOOP_LAG_MAX.set(lag)


class StallTracer:
    """Logs the stack of the event loop's thread whenever the loop stalls longer than `threshold_s`.

    The loop beats a heartbeat timer; a watchdog thread that sees no beat for `threshold_s` samples the
    loop thread's frame (`sys._current_frames`), once per stall: what was running when every call's
    playout waited. Works on uvloop, whose debug mode does not time callbacks. Opt-in
    (CALLBRIDGE_STALL_TRACE_MS): the watchdog wakes every quarter threshold.
    """

    def __init__(self, threshold_s: float, depth: int = 12) -> None:
        self.threshold_s = threshold_s
        self.depth = depth
        self.reports: deque[str] = deque(maxlen=100)  # the latest, for tests and debuggers
        #: How many times the watchdog has looked.
        self.checks = 0
        self._period = threshold_s / 4
        self._beat = time.monotonic()
        self._loop_thread = 0
        self._handle: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    def start(self) -> None:
        """Start beating on the running loop and watching from a daemon thread."""
        self._loop_thread = threading.get_ident()
        self._beat_now()
        self._watchdog = threading.Thread(target=self._watch, name="stall-tracer", daemon=True)
        self._watchdog.start()

    def stop(self) -> None:
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
        if self._watchdog is not None:
            self._watchdog.join(timeout=1)

    def _beat_now(self) -> None:
        self._beat = time.monotonic()
        self._handle = asyncio.get_running_loop().call_later(self._period, self._beat_now)

    def _watch(self) -> None:
        reported = 0.0
        while not self._stop.wait(self._period):
            self.checks += 1
            beat = self._beat
            stalled = time.monotonic() - beat
            if stalled < self.threshold_s or beat == reported:
                continue
            reported = beat
            report = f"event loop stalled {stalled * 1000:.0f} ms (so far), in:\n{self._stacks()}"
            self.reports.append(report)
            log.warning("%s", report.rstrip())

    def _stacks(self) -> str:
        """The loop thread's innermost frames, then each other thread's: with the loop thread only in the
        loop's own run frame, it was in C code or waiting for the GIL one of the others held."""
        names = {thread.ident: thread.name for thread in threading.enumerate()}
        frames = sys._current_frames()
        parts = []
        for ident, frame in sorted(frames.items(), key=lambda item: item[0] != self._loop_thread):
            if ident == threading.get_ident():
                continue  # the watchdog itself
            limit = self.depth if ident == self._loop_thread else 3
            label = "event loop" if ident == self._loop_thread else f"thread {names.get(ident, ident)}"
            # format_stack's limit keeps the outermost frames: take the innermost ones instead.
            stack = traceback.format_list(traceback.extract_stack(frame)[-limit:])
            parts.append(f"  [{label}]\n" + "".join(stack))
        return "".join(parts)
