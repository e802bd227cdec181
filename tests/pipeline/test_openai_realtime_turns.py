"""The `openaiRealtime` pipeline's turns: speaking, user text, transcripts and barge-in, on a real socket."""

from __future__ import annotations

from app.pipeline.base import AgentAudio, AgentClear, Transcript
from tests.pipeline.conftest import CALL_INFO
from tests.pipeline.realtime_fake import (
    TRANSCRIPT,
    events_until,
    next_event,
    realtime_server,
    started_pipeline,
)

# --- taking turns -------------------------------------------------------------------------------


async def test_greeting_asks_for_a_plain_response() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        assert await pipeline.speak() is True
        request = await fake.next("response.create")

    assert "response" not in request


async def test_greeting_audio_arrives_as_agent_audio() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        await pipeline.speak()
        event = await next_event(pipeline)

    assert event == AgentAudio(bytes([1]) * 160)


async def test_speaking_a_text_asks_the_model_to_say_exactly_that() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        assert await pipeline.speak(text="Welcome to Ada's Bakery!") is True
        request = await fake.next("response.create")

    instructions = request["response"]["instructions"]
    assert instructions.startswith(CALL_INFO.system_prompt)
    assert "exactly" in instructions and instructions.endswith("Welcome to Ada's Bakery!")


async def test_speaking_to_a_prompt_adds_it_to_the_instructions_for_that_response() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        assert await pipeline.speak(prompt="Ask whether the caller is still there.") is True
        request = await fake.next("response.create")

    instructions = request["response"]["instructions"]
    assert instructions.startswith(CALL_INFO.system_prompt)
    assert instructions.endswith("Ask whether the caller is still there.")


async def test_user_text_is_added_as_a_user_message_then_answered() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        assert await pipeline.send_user_text("The caller pressed 1 2 3") is True
        item = await fake.next("conversation.item.create")
        await fake.next("response.create")

    assert item["item"] == {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "The caller pressed 1 2 3"}],
    }
    assert fake.order[-2:] == ["conversation.item.create", "response.create"]


async def test_a_response_asked_for_during_another_waits_for_it_to_finish() -> None:
    async with realtime_server(finish_responses=False) as fake, started_pipeline(fake) as pipeline:
        await pipeline.speak()
        await fake.next("response.create")
        await pipeline.speak(prompt="Say more.")
        await pipeline.send_audio(b"\xff" * 160)
        await fake.next("input_audio_buffer.append")
        assert fake.order.count("response.create") == 1

        await fake.finish()
        second = await fake.next("response.create")

    assert second["response"]["instructions"].endswith("Say more.")


async def test_dtmf_is_not_sent_to_the_session() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        await pipeline.send_dtmf("5")
        await pipeline.send_audio(b"\xff" * 160)
        await fake.next("input_audio_buffer.append")

    assert fake.order == ["session.update", "input_audio_buffer.append"]


# --- transcripts --------------------------------------------------------------------------------


async def test_agent_transcript_becomes_a_final_agent_transcript() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        await pipeline.speak()
        _, transcript = await events_until(pipeline, Transcript)

    assert transcript == Transcript("agent", TRANSCRIPT, final=True)


async def test_caller_transcription_becomes_a_final_user_transcript() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        await fake.user_transcript("I'd like to order a cake.")
        transcript = await next_event(pipeline)

    assert transcript == Transcript("user", "I'd like to order a cake.", final=True)


# --- barge-in -----------------------------------------------------------------------------------


async def test_caller_speech_over_the_agent_clears_its_audio() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        await pipeline.speak()
        await events_until(pipeline, Transcript)
        await fake.speech_started()
        event = await next_event(pipeline)

    assert event == AgentClear()


async def test_barge_in_truncates_the_item_at_what_the_caller_heard() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        await pipeline.speak()
        await events_until(pipeline, Transcript)  # 60 ms of agent audio emitted
        await pipeline.playback_position(40.0)
        await fake.speech_started()
        truncate = await fake.next("conversation.item.truncate")

    assert truncate == {
        "type": "conversation.item.truncate",
        "item_id": fake.audio_item,
        "content_index": 0,
        "audio_end_ms": 40,
    }


async def test_barge_in_on_a_later_item_truncates_at_what_was_heard_of_that_item() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        await pipeline.speak()
        await events_until(pipeline, Transcript)
        await pipeline.playback_position(60.0)  # the first answer (60 ms) was heard in full
        await pipeline.speak()
        await events_until(pipeline, Transcript)
        await pipeline.playback_position(85.0)  # 25 ms into the second answer
        await fake.speech_started()
        truncate = await fake.next("conversation.item.truncate")

    assert truncate["audio_end_ms"] == 25


async def test_barge_in_cancels_the_response_in_progress() -> None:
    async with realtime_server(finish_responses=False) as fake, started_pipeline(fake) as pipeline:
        await pipeline.speak()
        await events_until(pipeline, Transcript)
        await fake.speech_started()
        await fake.next("response.cancel")

    assert fake.order[-2:] == ["conversation.item.truncate", "response.cancel"]


async def test_barge_in_after_the_response_finished_does_not_cancel() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        await pipeline.speak()
        await events_until(pipeline, Transcript)
        await fake.speech_started()
        await fake.next("conversation.item.truncate")
        await pipeline.send_audio(b"\xff" * 160)
        await fake.next("input_audio_buffer.append")

    assert "response.cancel" not in fake.order


async def test_audio_of_an_interrupted_item_arriving_late_is_dropped() -> None:
    async with realtime_server(finish_responses=False) as fake, started_pipeline(fake) as pipeline:
        await pipeline.speak()
        await events_until(pipeline, Transcript)
        await fake.speech_started()
        assert await next_event(pipeline) == AgentClear()
        await fake.audio_delta(b"\x07" * 160)
        await fake.user_transcript("wait")
        event = await next_event(pipeline)

    assert event == Transcript("user", "wait")


async def test_caller_speech_with_all_agent_audio_heard_does_not_clear() -> None:
    async with realtime_server() as fake, started_pipeline(fake) as pipeline:
        await pipeline.speak()
        await events_until(pipeline, Transcript)
        await pipeline.playback_position(60.0)
        await fake.speech_started()
        await fake.user_transcript("hello?")
        event = await next_event(pipeline)

    assert event == Transcript("user", "hello?")


async def test_barge_in_before_the_requested_response_is_announced_drops_its_audio() -> None:
    async with realtime_server(answer_responses=False) as fake, started_pipeline(fake) as pipeline:
        await pipeline.speak()
        await fake.next("response.create")
        await fake.speech_started()
        await fake.next("response.cancel")  # the fake starts the held response, then cancels it
        await fake.user_transcript("(marker)")
        before, _ = await events_until(pipeline, Transcript)

    assert before == [AgentClear()]
