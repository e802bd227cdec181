"""The `openaiRealtime` pipeline's built-in tools: each call becomes a call action and gets an answer."""

from __future__ import annotations

import orjson

from app.pipeline.base import AgentAudio, ColdTransfer, HangUp, PipelineEvent, PlayDtmf, Transcript
from app.pipeline.openai_realtime import OpenAIRealtimePipeline
from tests.pipeline.realtime_fake import (
    FakeRealtime,
    events_until,
    next_event,
    realtime_server,
    started_pipeline,
)


async def settle(fake: FakeRealtime, pipeline: OpenAIRealtimePipeline) -> list[PipelineEvent]:
    """Let the pipeline handle everything the fake sent so far, and the fake receive all it sent back.

    Returns the pipeline's events up to that point (a transcript, then an audio frame, mark it).
    """
    await fake.user_transcript("(marker)")
    before, _ = await events_until(pipeline, Transcript)
    await pipeline.send_audio(b"\xff" * 160)
    await fake.next("input_audio_buffer.append")
    return before


async def test_hang_up_tool_ends_the_call_with_its_message() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        await fake.function_call("hangUp", {"message": "caller said goodbye"})
        event = await next_event(pipeline)

    assert event == HangUp("caller said goodbye")


async def test_hang_up_tool_is_answered_with_its_output() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        await fake.function_call("hangUp", {}, call_id="call_bye")
        await next_event(pipeline)
        answer = await fake.next("conversation.item.create")

    assert answer["item"] == {"type": "function_call_output", "call_id": "call_bye", "output": '{"ok":true}'}


async def test_hang_up_tool_asks_for_no_further_response() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        await fake.function_call("hangUp", {})
        await settle(fake, pipeline)

    assert fake.order == ["session.update", "conversation.item.create", "input_audio_buffer.append"]


async def test_cold_transfer_tool_transfers_to_its_target() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        await fake.function_call("coldTransfer", {"target": "+15550123"})
        event = await next_event(pipeline)

    assert event == ColdTransfer("+15550123")


async def test_cold_transfer_tool_is_answered_then_the_model_goes_on() -> None:
    async with realtime_server() as fake, started_pipeline(fake):
        await fake.function_call("coldTransfer", {"target": "sip:desk@example.com"}, call_id="call_xfer")
        answer = await fake.next("conversation.item.create")
        await fake.next("response.create")

    assert answer["item"] == {"type": "function_call_output", "call_id": "call_xfer", "output": '{"ok":true}'}


async def test_play_dtmf_tool_plays_its_digits() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        await fake.function_call("playDtmfSounds", {"digits": "12#"})
        event = await next_event(pipeline)

    assert event == PlayDtmf("12#")


async def test_play_dtmf_tool_is_answered_then_the_model_goes_on() -> None:
    async with realtime_server() as fake, started_pipeline(fake):
        await fake.function_call("playDtmfSounds", {"digits": "9"}, call_id="call_dtmf")
        answer = await fake.next("conversation.item.create")
        await fake.next("response.create")

    assert answer["item"] == {"type": "function_call_output", "call_id": "call_dtmf", "output": '{"ok":true}'}


async def test_tool_call_announced_twice_is_acted_on_once() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        await fake.function_call("playDtmfSounds", {"digits": "1"})
        events = await settle(fake, pipeline)

    assert [event for event in events if not isinstance(event, AgentAudio)] == [PlayDtmf("1")]
    assert fake.order.count("conversation.item.create") == 1


async def test_tool_call_with_bad_arguments_is_refused_back_to_the_model() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        await fake.function_call("playDtmfSounds", {"digits": "12x"})
        answer = await fake.next("conversation.item.create")
        events = await settle(fake, pipeline)

    assert orjson.loads(answer["item"]["output"])["ok"] is False
    assert not any(isinstance(event, PlayDtmf) for event in events)


async def test_unknown_tool_is_refused_back_to_the_model() -> None:
    async with realtime_server() as fake, started_pipeline(fake):
        await fake.function_call("bookTable", {"time": "8pm"})
        answer = await fake.next("conversation.item.create")

    assert orjson.loads(answer["item"]["output"]) == {"ok": False, "error": "unknown tool 'bookTable'"}


async def test_tool_follow_up_waits_for_the_calling_response_to_finish() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        await fake.function_call("playDtmfSounds", {"digits": "1"}, finish=False)
        await fake.next("conversation.item.create")
        await pipeline.send_audio(b"\xff" * 160)
        await fake.next("input_audio_buffer.append")
        assert "response.create" not in fake.order

        await fake.finish()
        await fake.next("response.create")


async def test_tool_call_cut_short_is_not_acted_on() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        await fake.function_call("hangUp", {}, status="incomplete")
        events = await settle(fake, pipeline)

    assert events == []
    assert "conversation.item.create" not in fake.order


async def test_tool_call_of_a_response_the_caller_interrupted_is_not_acted_on() -> None:
    async with realtime_server(finish_responses=False) as fake, started_pipeline(fake) as pipeline:
        await pipeline.speak()
        await events_until(pipeline, Transcript)
        await fake.speech_started()
        item = {"id": "item_fc", "type": "function_call", "status": "completed"}
        call = {**item, "call_id": "call_late", "name": "hangUp", "arguments": "{}"}
        await fake.send({"type": "response.output_item.done", "response_id": fake.response_id, "item": call})
        events = await settle(fake, pipeline)

    assert not any(isinstance(event, HangUp) for event in events)


async def test_tool_call_only_listed_in_response_done_is_acted_on() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        call = {
            "id": "item_fc",
            "type": "function_call",
            "status": "completed",
            "call_id": "call_1",
            "name": "playDtmfSounds",
            "arguments": '{"digits": "42"}',
        }
        await fake.send(
            {"type": "response.done", "response": {"id": "resp_x", "status": "completed", "output": [call]}}
        )
        event = await next_event(pipeline)

    assert event == PlayDtmf("42")
