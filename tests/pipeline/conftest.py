"""A fake agent server on a loopback port, and websocket pipelines started against it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed

from app.pipeline.base import CallInfo, PipelineEvent
from app.pipeline.websocket import WebSocketOptions, WebSocketPipeline

#: Every test waits at most this long for something that should happen at once.
WAIT_S = 2.0

CALL_INFO = CallInfo(
    call_id="call-123",
    agent_id="agent-7",
    system_prompt="You are a helpful receptionist.",
    template_context={"customerName": "Ada", "visits": 3, "vip": True},
    metadata={"crmId": "42"},
    medium={"twilio": {}},
    from_number="+15550100",
    to_number="+15550199",
    provider_call_id="CA0123456789abcdef0123456789abcdef",
)


class FakeAgent:
    """An agent server: records the handshake and every message; the test speaks for it via `ws`."""

    def __init__(self) -> None:
        self.port = 0
        self.ws: ServerConnection | None = None
        self.headers: Headers | None = None
        self.connected = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.received: asyncio.Queue[str | bytes] = asyncio.Queue()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/agent"

    async def handler(self, ws: ServerConnection) -> None:
        self.ws, self.headers = ws, ws.request.headers if ws.request else None
        self.connected.set()
        try:
            async for message in ws:
                await self.received.put(message)
        except ConnectionClosed:
            pass
        finally:
            self.disconnected.set()

    async def next(self) -> str | bytes:
        """The next message from the bridge."""
        return await asyncio.wait_for(self.received.get(), WAIT_S)

    async def next_json(self) -> dict[str, Any]:
        """The next message from the bridge, which must be JSON text."""
        message = await self.next()
        assert isinstance(message, str), f"expected a text message, got {message!r}"
        return orjson.loads(message)

    async def send_json(self, data: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send(orjson.dumps(data).decode())

    async def send(self, message: str | bytes) -> None:
        assert self.ws is not None
        await self.ws.send(message)


@pytest.fixture
async def agent() -> AsyncIterator[FakeAgent]:
    fake = FakeAgent()
    async with serve(fake.handler, "127.0.0.1", 0) as server:
        fake.port = server.sockets[0].getsockname()[1]
        yield fake


StartPipeline = Callable[..., Awaitable[WebSocketPipeline]]


@pytest.fixture
async def start_pipeline(agent: FakeAgent) -> AsyncIterator[StartPipeline]:
    """`await start_pipeline(framing="twilio", ...)`: a pipeline started against the fake agent."""
    pipelines: list[WebSocketPipeline] = []

    async def start(info: CallInfo = CALL_INFO, **options: Any) -> WebSocketPipeline:
        pipeline = WebSocketPipeline(WebSocketOptions.model_validate({"url": agent.url, **options}))
        pipelines.append(pipeline)
        await pipeline.start(info, pipeline.audio_format)
        await asyncio.wait_for(agent.connected.wait(), WAIT_S)
        return pipeline

    yield start
    for pipeline in pipelines:
        with contextlib.suppress(Exception):
            await pipeline.close()


async def next_event(pipeline: WebSocketPipeline) -> PipelineEvent:
    """The pipeline's next event (fails the test if none comes)."""
    return await asyncio.wait_for(anext(aiter(pipeline.events())), WAIT_S)
