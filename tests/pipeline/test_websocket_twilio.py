"""The `websocket` pipeline, twilio framing: the agent sees Twilio Media Streams as Twilio sends them."""

from __future__ import annotations

import base64
import re
from typing import Any

import orjson

from app.media.formats import PCMU_8K
from app.pipeline.base import AgentAudio, AgentClear, CallInfo
from app.pipeline.websocket import WebSocketOptions, WebSocketPipeline
from tests.pipeline.conftest import FakeAgent, StartPipeline, next_event


async def started(
    agent: FakeAgent, start_pipeline: StartPipeline, **kwargs: Any
) -> tuple[WebSocketPipeline, str]:
    """A twilio-framed pipeline whose `connected` and `start` the agent has read; and the streamSid."""
    pipeline = await start_pipeline(framing="twilio", **kwargs)
    await agent.next_json()
    start = await agent.next_json()
    return pipeline, start["streamSid"]


async def send_media(agent: FakeAgent, stream_sid: str, audio: bytes) -> None:
    payload = base64.b64encode(audio).decode()
    await agent.send_json({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}})


async def send_mark(agent: FakeAgent, stream_sid: str, name: str) -> None:
    await agent.send_json({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def test_twilio_framing_takes_mulaw_8k() -> None:
    pipeline = WebSocketPipeline(WebSocketOptions(url="ws://agent.example/ws", framing="twilio"))

    assert pipeline.accepted_formats == (PCMU_8K,)


async def test_agent_receives_connected_first(agent: FakeAgent, start_pipeline: StartPipeline) -> None:
    await start_pipeline(framing="twilio")

    assert await agent.next_json() == {"event": "connected", "protocol": "Call", "version": "1.0.0"}


async def test_agent_receives_start_as_twilio_sends_it(
    agent: FakeAgent, start_pipeline: StartPipeline
) -> None:
    await start_pipeline(framing="twilio")
    await agent.next_json()

    start = await agent.next_json()

    stream_sid = start["streamSid"]
    assert re.fullmatch(r"MZ[0-9a-f]{32}", stream_sid)
    assert start == {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": "",
            "streamSid": stream_sid,
            "callSid": "CA0123456789abcdef0123456789abcdef",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {
                "customerName": "Ada",
                "visits": "3",
                "vip": "true",
                "callId": "call-123",
                "agentId": "agent-7",
                "from": "+15550100",
                "to": "+15550199",
                "from_number": "+15550100",
                "to_number": "+15550199",
            },
        },
        "streamSid": stream_sid,
    }


async def test_call_sid_is_the_call_id_when_there_is_no_provider_call(
    agent: FakeAgent, start_pipeline: StartPipeline
) -> None:
    await start_pipeline(framing="twilio", info=CallInfo(call_id="call-9", agent_id=None, system_prompt=""))
    await agent.next_json()

    start = (await agent.next_json())["start"]

    assert start["callSid"] == "call-9"
    assert start["customParameters"] == {
        "callId": "call-9", "agentId": "", "from": "", "to": "", "from_number": "", "to_number": "",
    }  # fmt: skip


async def test_caller_audio_reaches_the_agent_as_20ms_media_messages(
    agent: FakeAgent, start_pipeline: StartPipeline
) -> None:
    pipeline, stream_sid = await started(agent, start_pipeline)
    audio = bytes(range(240)) * 2  # 60 ms of μ-law

    await pipeline.send_audio(audio)

    for i in range(3):
        assert await agent.next_json() == {
            "event": "media",
            "sequenceNumber": str(i + 2),
            "media": {
                "track": "inbound",
                "chunk": str(i + 1),
                "timestamp": str(i * 20),
                "payload": base64.b64encode(audio[i * 160 : (i + 1) * 160]).decode(),
            },
            "streamSid": stream_sid,
        }


async def test_caller_audio_is_held_until_a_whole_20ms_frame(
    agent: FakeAgent, start_pipeline: StartPipeline
) -> None:
    pipeline, _ = await started(agent, start_pipeline)

    await pipeline.send_audio(bytes(100))
    await pipeline.send_audio(bytes(100))

    media = (await agent.next_json())["media"]
    assert base64.b64decode(media["payload"]) == bytes(160)


async def test_dtmf_reaches_the_agent_as_twilio_sends_it(
    agent: FakeAgent, start_pipeline: StartPipeline
) -> None:
    pipeline, stream_sid = await started(agent, start_pipeline)

    await pipeline.send_dtmf("#")

    assert await agent.next_json() == {
        "event": "dtmf",
        "streamSid": stream_sid,
        "sequenceNumber": "2",
        "dtmf": {"track": "inbound_track", "digit": "#"},
    }


async def test_close_sends_stop_then_closes_the_socket(
    agent: FakeAgent, start_pipeline: StartPipeline
) -> None:
    pipeline, stream_sid = await started(agent, start_pipeline)

    await pipeline.close()

    assert await agent.next_json() == {
        "event": "stop",
        "sequenceNumber": "2",
        "streamSid": stream_sid,
        "stop": {"accountSid": "", "callSid": "CA0123456789abcdef0123456789abcdef"},
    }
    await agent.disconnected.wait()
    assert agent.ws is not None and agent.ws.close_code == 1000


async def test_agent_media_of_any_length_becomes_agent_audio(
    agent: FakeAgent, start_pipeline: StartPipeline
) -> None:
    pipeline, stream_sid = await started(agent, start_pipeline)

    await send_media(agent, stream_sid, b"\x7f" * 333)

    assert await next_event(pipeline) == AgentAudio(b"\x7f" * 333)


async def test_agent_clear_becomes_agent_clear(agent: FakeAgent, start_pipeline: StartPipeline) -> None:
    pipeline, stream_sid = await started(agent, start_pipeline)

    await agent.send_json({"event": "clear", "streamSid": stream_sid})

    assert await next_event(pipeline) == AgentClear()


async def test_malformed_agent_messages_are_ignored(agent: FakeAgent, start_pipeline: StartPipeline) -> None:
    pipeline, stream_sid = await started(agent, start_pipeline)

    await agent.send(b"\x00\x01")
    await agent.send("not json")
    await agent.send_json({"event": "media", "streamSid": stream_sid, "media": {"payload": "not base64!"}})
    await agent.send_json({"event": "media", "streamSid": stream_sid})
    await agent.send_json({"event": "mark", "streamSid": stream_sid, "mark": {}})
    await agent.send_json({"event": "sendDigits", "streamSid": stream_sid})
    await agent.send_json({"event": "clear", "streamSid": stream_sid})

    assert await next_event(pipeline) == AgentClear()


async def test_mark_is_echoed_once_the_audio_before_it_has_played(
    agent: FakeAgent, start_pipeline: StartPipeline
) -> None:
    pipeline, stream_sid = await started(agent, start_pipeline)
    await send_media(agent, stream_sid, bytes(1600))  # 200 ms
    await send_mark(agent, stream_sid, "greeting-done")
    await next_event(pipeline)

    await pipeline.playback_position(100.0)
    await pipeline.send_dtmf("1")  # a marker: nothing was echoed before it
    assert (await agent.next_json())["event"] == "dtmf"
    await pipeline.playback_position(200.0)

    assert await agent.next_json() == {
        "event": "mark",
        "sequenceNumber": "3",
        "streamSid": stream_sid,
        "mark": {"name": "greeting-done"},
    }


async def test_mark_after_played_audio_is_echoed_at_once(
    agent: FakeAgent, start_pipeline: StartPipeline
) -> None:
    _, stream_sid = await started(agent, start_pipeline)

    await send_mark(agent, stream_sid, "nothing-queued")

    assert (await agent.next_json())["mark"] == {"name": "nothing-queued"}


async def test_clear_returns_every_pending_mark(agent: FakeAgent, start_pipeline: StartPipeline) -> None:
    _, stream_sid = await started(agent, start_pipeline)
    await send_media(agent, stream_sid, bytes(8000))
    await send_mark(agent, stream_sid, "first")
    await send_media(agent, stream_sid, bytes(8000))
    await send_mark(agent, stream_sid, "second")

    await agent.send_json({"event": "clear", "streamSid": stream_sid})

    names = [orjson.loads(await agent.next())["mark"]["name"] for _ in range(2)]
    assert names == ["first", "second"]


async def test_user_text_is_not_available_in_twilio_framing(
    agent: FakeAgent, start_pipeline: StartPipeline
) -> None:
    pipeline, _ = await started(agent, start_pipeline)

    assert await pipeline.send_user_text("hello") is False
