"""A call's timers: maximum duration and media idleness. Each ends the call through its `CallEnding`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from app.calls.ending import CallEnding
from app.schemas.calls import EndReason


async def max_duration(seconds: float, ending: CallEnding) -> None:
    """End the call after `seconds` (its maxDuration)."""
    await asyncio.sleep(seconds)
    ending.finish(EndReason.TIMEOUT, "the call reached its maxDuration")


async def media_idle(
    timeout_s: float,
    frames_in: Callable[[], int],
    ending: CallEnding,
    suspended: Callable[[], bool] = lambda: False,
) -> None:
    """End the call when no caller audio came for `timeout_s` (sampled, not timed per frame); while
    `suspended()` (a SIP hold) silence is expected, and the wait starts over once it is not."""
    loop = asyncio.get_running_loop()
    frames, since = frames_in(), loop.time()
    while True:
        await asyncio.sleep(timeout_s / 10)
        if suspended() or frames_in() != frames:
            frames, since = frames_in(), loop.time()
        elif loop.time() - since >= timeout_s:
            ending.finish(EndReason.CONNECTION_ERROR, f"no audio from the client for {timeout_s:g}s")
            return
