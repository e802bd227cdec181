"""The `openaiRealtime` pipeline when the endpoint fails: at connect, at session setup, and mid-call."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator

import pytest

from app.media.formats import PCMU_8K
from app.pipeline.base import PipelineError, Transcript
from app.pipeline.openai_realtime import OpenAIRealtimePipeline
from tests.pipeline.conftest import CALL_INFO, WAIT_S
from tests.pipeline.realtime_fake import make_pipeline, next_event, realtime_server, started_pipeline


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def start_against(url: str, **options: object) -> OpenAIRealtimePipeline:
    pipeline = make_pipeline(url, **options)
    await asyncio.wait_for(pipeline.start(CALL_INFO, PCMU_8K), WAIT_S)
    return pipeline


# --- connecting ---------------------------------------------------------------------------------


async def test_unreachable_endpoint_fails_start() -> None:
    with pytest.raises(PipelineError, match=r"could not connect to the Realtime endpoint ws://127\.0\.0\.1"):
        await start_against(f"ws://127.0.0.1:{free_port()}/v1/realtime")


async def test_endpoint_refusing_the_key_fails_start_with_the_status() -> None:
    async with realtime_server(reject_status=401) as fake:
        with pytest.raises(PipelineError, match=r"refused the connection \(HTTP 401\)"):
            await start_against(fake.url)


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


async def test_endpoint_not_answering_fails_start_after_the_connect_timeout(silent_port: int) -> None:
    with pytest.raises(PipelineError, match=r"did not answer within 0.2s"):
        await start_against(f"ws://127.0.0.1:{silent_port}/v1/realtime", connectTimeout="0.2s")


async def test_missing_api_key_variable_fails_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CALLBRIDGE_TEST_MISSING_KEY", raising=False)
    async with realtime_server() as fake:
        with pytest.raises(PipelineError, match="CALLBRIDGE_TEST_MISSING_KEY"):
            await start_against(fake.url, apiKey=None, apiKeyEnv="CALLBRIDGE_TEST_MISSING_KEY")


async def test_connection_errors_do_not_show_the_url_query() -> None:
    with pytest.raises(PipelineError) as failure:
        await start_against(f"ws://127.0.0.1:{free_port()}/v1/realtime?api-key=secret")

    assert "secret" not in str(failure.value)


async def test_endpoint_rejecting_the_session_fails_start_with_its_error() -> None:
    async with realtime_server(reject_session="Invalid value: 'nova' is not a supported voice") as fake:
        with pytest.raises(PipelineError, match="unknown_parameter: Invalid value: 'nova'"):
            await start_against(fake.url, voice="nova")


async def test_endpoint_never_confirming_the_session_fails_start_after_the_connect_timeout() -> None:
    async with realtime_server() as fake:
        fake.confirm_session = False
        with pytest.raises(PipelineError, match=r"did not accept the session within 0.2s"):
            await start_against(fake.url, connectTimeout="0.2s")


# --- mid-call -----------------------------------------------------------------------------------


async def test_connection_dropping_mid_call_fails_the_events() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        await fake.drop()
        with pytest.raises(PipelineError, match="dropped"):
            await next_event(pipeline)


async def test_endpoint_closing_mid_call_fails_the_events() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        assert fake.ws is not None
        await fake.ws.close(1011, "internal error")
        with pytest.raises(
            PipelineError, match=r"closed the session: received 1011 \(internal error\) internal error"
        ):
            await next_event(pipeline)


async def test_fatal_error_event_fails_the_events_with_its_message() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        await fake.error("session_expired", "Your session hit the maximum duration of 60 minutes.")
        with pytest.raises(PipelineError, match="session_expired: Your session hit the maximum duration"):
            await next_event(pipeline)


async def test_non_fatal_error_event_is_logged_and_the_call_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        with caplog.at_level(logging.WARNING, logger="app.pipeline.openai_realtime"):
            await fake.error("invalid_value", "Invalid value: 'x'.")
            await fake.user_transcript("still here")
            event = await next_event(pipeline)

    assert event == Transcript("user", "still here")
    assert "invalid_value: Invalid value: 'x'." in caplog.text


async def test_malformed_server_events_are_skipped() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        assert fake.ws is not None
        await fake.ws.send("not json")
        await fake.ws.send('["not", "an", "object"]')
        await fake.send({"type": "response.output_audio.delta", "item_id": "item_x", "delta": "%%%"})
        await fake.send({"type": "response.output_audio_transcript.done", "transcript": 42})
        await fake.send({"type": "response.output_item.done", "item": {"type": "function_call"}})
        await fake.send({"type": "error", "error": "boom"})
        await fake.send({"type": "some.future.event", "detail": {}})
        await fake.user_transcript("still here")
        event = await next_event(pipeline)

    assert event == Transcript("user", "still here")


async def test_closing_twice_is_harmless() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        await pipeline.close()
        await pipeline.close()

        assert [event async for event in pipeline.events()] == []
