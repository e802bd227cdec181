"""The `websocket` pipeline's connection, either framing: failing to connect, and the agent ending."""

from __future__ import annotations

import asyncio
import logging
import socket
import weakref
from collections.abc import AsyncIterator
from http import HTTPStatus

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from app.pipeline.agent_link import MAX_QUEUED_AUDIO
from app.pipeline.base import HangUp, PipelineError
from app.pipeline.websocket import WebSocketOptions, WebSocketPipeline
from tests.conftest import wait_for
from tests.pipeline.conftest import CALL_INFO, WAIT_S, FakeAgent, StartPipeline, next_event

FRAMINGS = ["native", "twilio"]


async def start_against(url: str, **options: object) -> WebSocketPipeline:
    pipeline = WebSocketPipeline(WebSocketOptions.model_validate({"url": url, **options}))
    await pipeline.start(CALL_INFO, pipeline.audio_format)
    return pipeline


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_unreachable_agent_fails_start() -> None:
    with pytest.raises(PipelineError, match=r"could not connect to the agent at ws://127\.0\.0\.1"):
        await start_against(f"ws://127.0.0.1:{free_port()}/agent")


async def test_agent_refusing_the_handshake_fails_start_with_the_status() -> None:
    def refuse(connection: ServerConnection, request: Request) -> Response:
        return connection.respond(HTTPStatus.FORBIDDEN, "bad signature\n")

    async def never(ws: ServerConnection) -> None:
        raise AssertionError("the handshake was refused")

    async with serve(never, "127.0.0.1", 0, process_request=refuse) as server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(PipelineError, match=r"refused the connection \(HTTP 403\)"):
            await start_against(f"ws://127.0.0.1:{port}/agent")


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A TCP port that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_agent_not_answering_fails_start_after_the_connect_timeout(silent_port: int) -> None:
    with pytest.raises(PipelineError, match=r"did not answer within 0.2s"):
        await asyncio.wait_for(
            start_against(f"ws://127.0.0.1:{silent_port}/agent", connectTimeout="0.2s"), WAIT_S
        )


async def test_connection_errors_do_not_show_the_url_query() -> None:
    with pytest.raises(PipelineError) as failure:
        await start_against(f"ws://user:pw@127.0.0.1:{free_port()}/agent?token=secret")

    assert "secret" not in str(failure.value) and "pw" not in str(failure.value)


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_agent_dropping_mid_call_raises_from_events(
    agent: FakeAgent, start_pipeline: StartPipeline, framing: str
) -> None:
    pipeline = await start_pipeline(framing=framing)
    assert agent.ws is not None

    agent.ws.transport.abort()

    with pytest.raises(PipelineError, match="dropped"):
        await next_event(pipeline)


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_agent_closing_with_an_error_code_raises_from_events(
    agent: FakeAgent, start_pipeline: StartPipeline, framing: str
) -> None:
    pipeline = await start_pipeline(framing=framing)
    assert agent.ws is not None

    await agent.ws.close(1011, "model crashed")

    with pytest.raises(PipelineError, match="1011"):
        await next_event(pipeline)


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_agent_closing_normally_hangs_up(
    agent: FakeAgent, start_pipeline: StartPipeline, framing: str
) -> None:
    pipeline = await start_pipeline(framing=framing)
    assert agent.ws is not None

    await agent.ws.close(1000)

    assert [event async for event in pipeline.events()] == [HangUp("the agent closed the connection")]


async def test_agent_closing_after_hang_up_ends_without_a_second_hang_up(
    agent: FakeAgent, start_pipeline: StartPipeline
) -> None:
    pipeline = await start_pipeline()
    assert agent.ws is not None

    await agent.send_json({"type": "hang_up", "message": "Bye"})
    await agent.ws.close(1000)

    assert [event async for event in pipeline.events()] == [HangUp("Bye")]


async def test_caller_audio_after_the_agent_left_is_dropped_quietly(
    agent: FakeAgent, start_pipeline: StartPipeline, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = await start_pipeline()
    assert agent.ws is not None
    await agent.ws.close(1000)
    assert [event async for event in pipeline.events()] == [HangUp("the agent closed the connection")]

    with caplog.at_level(logging.WARNING, logger="app"):
        # More than the outbox holds: queued for the gone agent, the overflow would be dropped, and logged.
        for _ in range(MAX_QUEUED_AUDIO + 1):
            await pipeline.send_audio(bytes(640))
        await pipeline.send_dtmf("1")
        await pipeline.close()

    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []


async def test_a_closed_agent_link_is_freed_by_reference_counting_alone(
    agent: FakeAgent, no_cycle_collector: None
) -> None:
    # A link left in a reference cycle would wait for the collector's full pass, which pauses every call.
    pipeline = WebSocketPipeline(WebSocketOptions.model_validate({"url": agent.url}))
    await pipeline.start(CALL_INFO, pipeline.audio_format)
    await asyncio.wait_for(agent.connected.wait(), WAIT_S)
    await pipeline.send_audio(b"\x00" * 640)
    await agent.next()
    await pipeline.close("hangup")
    await asyncio.wait_for(agent.disconnected.wait(), WAIT_S)
    link = weakref.ref(pipeline)
    del pipeline

    async def freed() -> bool:
        return link() is None

    await wait_for(freed)
