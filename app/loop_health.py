"""The serving process's event loop under load: start-up objects kept out of the garbage collector's
full passes, and every stall measured (garbage-collection pauses and late wake-ups), for `/metrics`.

A full collection walks every tracked object; after start-up that is ~150,000 of them (FastAPI, pydantic,
SQLAlchemy, numpy), a 100+ ms pause that made every live call's playout run dry at once. Objects alive
when serving starts live as long as the process, so `gc.freeze()` moves them where no pass looks.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from typing import Any

from prometheus_client import Gauge, Histogram

from app.metrics import REGISTRY

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
