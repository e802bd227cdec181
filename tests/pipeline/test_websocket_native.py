"""The `websocket` pipeline, native framing, against a fake agent server on a real socket."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from app.pipeline.base import (
    AgentAudio,
    AgentClear,
    CallInfo,
    ColdTransfer,
    HangUp,
    PipelineEvent,
    PlayDtmf,
    Transcript,
)
from tests.pipeline.conftest import FakeAgent, StartPipeline, next_event


async def test_call_started_is_the_first_message_with_the_call_metadata(
    agent: FakeAgent, start_pipeline: StartPipeline
) -> None:
    await start_pipeline(sampleRate=24000)

    assert await agent.next_json() == {
        "type": "call_started",
        "callId": "call-123",
        "agentId": "agent-7",
        "systemPrompt": "You are a helpful receptionist.",
        "templateContext": {"customerName": "Ada", "visits": 3, "vip": True},
        "metadata": {"crmId": "42"},
        "medium": {"twilio": {}},
        "from": "+15550100",
        "to": "+15550199",
        "inputSampleRate": 24000,
        "outputSampleRate": 24000,
    }


async def test_handshake_carries_call_id_timestamp_and_static_headers(
    agent: FakeAgent, start_pipeline: StartPipeline
) -> None:
    before = int(time.time())
    await start_pipeline(headers={"Authorization": "Bearer agent-token"})

    assert agent.headers is not None
    assert agent.headers["X-Callbridge-Call-Id"] == "call-123"
    assert before <= int(agent.headers["X-Callbridge-Timestamp"]) <= int(time.time())
    assert agent.headers["Authorization"] == "Bearer agent-token"
    assert "X-Callbridge-Signature" not in agent.headers


async def test_handshake_signature_verifies_with_the_shared_secret(
    agent: FakeAgent, start_pipeline: StartPipeline
) -> None:
    await start_pipeline(secret="s3cret")

    assert agent.headers is not None
    signed = f"{agent.headers['X-Callbridge-Timestamp']}.{agent.headers['X-Callbridge-Call-Id']}"
    expected = hmac.new(b"s3cret", signed.encode(), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(agent.headers["X-Callbridge-Signature"], expected)


async def test_caller_audio_reaches_the_agent_as_binary_pcm(
    agent: FakeAgent, start_pipeline: StartPipeline
) -> None:
    pipeline = await start_pipeline()
    await agent.next_json()  # call_started
    frame = bytes(range(256)) * 2 + bytes(128)  # 20 ms at 16 kHz

    await pipeline.send_audio(frame)

    assert await agent.next() == frame


async def test_agent_binary_audio_becomes_agent_audio(
    agent: FakeAgent, start_pipeline: StartPipeline
) -> None:
    pipeline = await start_pipeline()
    await agent.next_json()
    await pipeline.send_audio(b"\x01\x02" * 320)

    await agent.send(await agent.next())  # the agent echoes the caller's frame

    assert await next_event(pipeline) == AgentAudio(b"\x01\x02" * 320)


async def test_agent_audio_of_odd_length_keeps_whole_samples(
    agent: FakeAgent, start_pipeline: StartPipeline
) -> None:
    pipeline = await start_pipeline()

    await agent.send(b"\x01\x02\x03")
    await agent.send(b"\x04\x05\x06")

    assert await next_event(pipeline) == AgentAudio(b"\x01\x02")
    assert await next_event(pipeline) == AgentAudio(b"\x03\x04\x05\x06")


@pytest.mark.parametrize(
    ("message", "event"),
    [
        ({"type": "playback_clear_buffer"}, AgentClear()),
        ({"type": "hang_up", "message": "Goodbye!"}, HangUp("Goodbye!")),
        ({"type": "hang_up"}, HangUp(None)),
        ({"type": "cold_transfer", "target": "+15550123"}, ColdTransfer("+15550123")),
        (
            {
                "type": "cold_transfer",
                "target": "sip:desk@pbx",
                "sipVerb": "INVITE",
                "extraHeaders": {"X-Note": "vip"},
                "fallbackToBridge": True,
            },
            ColdTransfer("sip:desk@pbx", "INVITE", {"X-Note": "vip"}, True),
        ),
        ({"type": "play_dtmf_sounds", "digits": "12#"}, PlayDtmf("12#")),
        (
            {"type": "transcript", "role": "agent", "text": "Hello", "final": False},
            Transcript("agent", "Hello", False),
        ),
        ({"type": "transcript", "role": "user", "text": "Hi there"}, Transcript("user", "Hi there", True)),
    ],
    ids=lambda value: value.get("type") if isinstance(value, dict) else "",
)
async def test_agent_message_becomes_its_pipeline_event(
    agent: FakeAgent, start_pipeline: StartPipeline, message: dict[str, object], event: PipelineEvent
) -> None:
    pipeline = await start_pipeline()

    await agent.send_json(message)

    assert await next_event(pipeline) == event


async def test_malformed_agent_messages_are_ignored(agent: FakeAgent, start_pipeline: StartPipeline) -> None:
    pipeline = await start_pipeline()

    for bad in ("not json", "[1, 2]", '{"type": ["x"]}', '{"type": "state", "state": "speaking"}'):
        await agent.send(bad)
    await agent.send_json({"type": "cold_transfer"})
    await agent.send_json({"type": "play_dtmf_sounds", "digits": "12x"})
    await agent.send_json({"type": "transcript", "role": "narrator", "text": "..."})
    await agent.send_json({"type": "playback_clear_buffer"})

    assert await next_event(pipeline) == AgentClear()


async def test_dtmf_reaches_the_agent(agent: FakeAgent, start_pipeline: StartPipeline) -> None:
    pipeline = await start_pipeline()
    await agent.next_json()

    await pipeline.send_dtmf("5")

    assert await agent.next_json() == {"type": "dtmf", "digit": "5"}


async def test_playback_position_reaches_the_agent(agent: FakeAgent, start_pipeline: StartPipeline) -> None:
    pipeline = await start_pipeline()
    await agent.next_json()

    await pipeline.playback_position(1234.4)

    assert await agent.next_json() == {"type": "playback_position", "playedMs": 1234}


async def test_user_text_message_reaches_the_agent(agent: FakeAgent, start_pipeline: StartPipeline) -> None:
    pipeline = await start_pipeline()
    await agent.next_json()

    assert await pipeline.send_user_text("The caller is on hold music.")

    assert await agent.next_json() == {"type": "user_text_message", "text": "The caller is on hold music."}


async def test_close_sends_call_ended_then_closes_normally(
    agent: FakeAgent, start_pipeline: StartPipeline
) -> None:
    pipeline = await start_pipeline()
    await agent.next_json()

    await pipeline.close(reason="hangup")

    assert await agent.next_json() == {"type": "call_ended", "reason": "hangup"}
    await agent.disconnected.wait()
    assert agent.ws is not None and agent.ws.close_code == 1000


async def test_call_ended_says_agent_hangup_after_the_agent_hung_up(
    agent: FakeAgent, start_pipeline: StartPipeline
) -> None:
    pipeline = await start_pipeline()
    await agent.next_json()
    await agent.send_json({"type": "hang_up"})
    await next_event(pipeline)

    await pipeline.close()

    assert await agent.next_json() == {"type": "call_ended", "reason": "agent_hangup"}


async def test_close_ends_the_events(agent: FakeAgent, start_pipeline: StartPipeline) -> None:
    pipeline = await start_pipeline()

    await pipeline.close()

    assert [event async for event in pipeline.events()] == []


async def test_call_info_without_optional_fields_sends_nulls(
    agent: FakeAgent, start_pipeline: StartPipeline
) -> None:
    await start_pipeline(info=CallInfo(call_id="c", agent_id=None, system_prompt=""))

    started = await agent.next_json()

    assert (started["agentId"], started["from"], started["to"], started["templateContext"]) == (
        None,
        None,
        None,
        {},
    )
