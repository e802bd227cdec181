"""A simulated Twilio call kept live while a test watches it, and server-sent events read from the API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import orjson

from app.simulator.twilio import CallReport, CallScript, FakeTwilio
from tests.conftest import RunningServer, wait_for


@dataclass
class LiveCall:
    call_id: str
    #: The fake caller's run: its report once the call is over.
    caller: asyncio.Task[CallReport]


@contextlib.asynccontextmanager
async def live_call(
    server: RunningServer, twilio: FakeTwilio, agent_id: str, script: CallScript
) -> AsyncIterator[LiveCall]:
    """Call `agent_id` (a fresh agent: its only call is this one) and yield once the call exists; on leaving,
    wait for the caller's script to finish."""
    caller = asyncio.create_task(twilio.call(agent_id, script))

    async def created() -> str | None:
        async with server.api() as api:
            results = (await api.get("/api/calls", params={"agentId": agent_id})).json()["results"]
        if caller.done():
            caller.result()  # the call failed before it was listed: its error
        return results[0]["callId"] if results else None

    try:
        yield LiveCall(await wait_for(created), caller)
        await caller
    finally:
        caller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await caller


async def server_events(api: httpx.AsyncClient, path: str) -> AsyncIterator[tuple[str, dict]]:
    """(event, data) of each server-sent event of `path`, until the stream ends."""
    async with api.stream("GET", path, timeout=httpx.Timeout(10, read=30)) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        event = "message"
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                yield event, orjson.loads(line.removeprefix("data: "))
                event = "message"
