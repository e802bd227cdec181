"""The serving loop's health: start-up objects frozen out of the collector, and stalls measured."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator

import pytest

from app.loop_health import GC_PAUSES, GcPauseTimer, LoopLagProbe, StallTracer, freeze_startup_objects
from tests.conftest import wait_for


@pytest.fixture
def unfreeze_after() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_freezing_moves_every_live_object_out_of_the_collectors_reach(unfreeze_after: None) -> None:
    frozen = freeze_startup_objects()
    assert frozen == gc.get_freeze_count() > 10_000  # this test process alone holds that many
    assert sum(gc.get_count()) < 100


def test_each_collection_is_timed_under_its_generation() -> None:
    before = _count(2)
    timer = GcPauseTimer()
    timer.install()
    try:
        gc.collect(2)
    finally:
        timer.remove()
    assert _count(2) == before + 1
    assert timer.longest > 0
    gc.collect(2)  # removed: no longer counted
    assert _count(2) == before + 1


async def test_a_blocked_loop_is_seen_as_late_as_it_was_blocked() -> None:
    probe = LoopLagProbe(interval_s=0.005)
    probe.start()
    try:
        await asyncio.sleep(0)  # the probe's first timer is set
        time.sleep(0.06)  # noqa: ASYNC251  # the stall under test: the loop is blocked

        async def seen() -> bool:
            return probe.longest >= 0.05

        await wait_for(seen, within=2)
    finally:
        await probe.stop()


def a_blocking_step_in_call_setup(seconds: float) -> None:
    time.sleep(seconds)  # the stall under test: the loop is blocked


async def test_a_stall_is_reported_once_with_the_blocking_function_on_the_stack() -> None:
    tracer = StallTracer(threshold_s=0.02)
    tracer.start()
    try:
        a_blocking_step_in_call_setup(0.15)

        async def reported() -> bool:
            return bool(tracer.reports)

        await wait_for(reported, within=2)
        looked = tracer.checks

        async def looked_again() -> bool:  # with the loop beating again: the same stall is not reported twice
            return tracer.checks >= looked + 8

        await wait_for(looked_again, within=2)
    finally:
        tracer.stop()
    [report] = tracer.reports
    assert "a_blocking_step_in_call_setup" in report


async def test_a_loop_that_keeps_beating_reports_nothing() -> None:
    tracer = StallTracer(threshold_s=0.05)
    tracer.start()
    try:
        for _ in range(20):
            await asyncio.sleep(0.005)
    finally:
        tracer.stop()
    assert list(tracer.reports) == []


def _count(generation: int) -> float:
    for metric in GC_PAUSES.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count") and sample.labels["generation"] == str(generation):
                return sample.value
    return 0.0
