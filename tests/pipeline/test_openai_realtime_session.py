"""The `openaiRealtime` pipeline's handshake, session configuration and audio both ways, on a real socket."""

from __future__ import annotations

import weakref

import pytest

from app.media.formats import PCMA_8K, PCMU_8K, pcm16
from app.pipeline.base import AgentAudio
from app.pipeline.realtime_events import PCM_24K
from tests.conftest import wait_for
from tests.pipeline.conftest import CALL_INFO
from tests.pipeline.realtime_fake import decoded, next_event, realtime_server, started_pipeline


async def test_handshake_sends_the_api_key_from_the_environment_as_a_bearer_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CALLBRIDGE_TEST_OPENAI_KEY", "sk-from-env")
    async with (
        realtime_server() as fake,
        started_pipeline(fake, apiKey=None, apiKeyEnv="CALLBRIDGE_TEST_OPENAI_KEY"),
    ):
        assert fake.headers is not None
        assert fake.headers["Authorization"] == "Bearer sk-from-env"


async def test_handshake_sends_no_beta_header() -> None:
    async with realtime_server() as fake, started_pipeline(fake):
        assert fake.headers is not None
        assert "OpenAI-Beta" not in fake.headers


async def test_handshake_adds_the_model_to_the_url() -> None:
    async with realtime_server() as fake, started_pipeline(fake, model="gpt-realtime-mini"):
        assert fake.path == "/v1/realtime?model=gpt-realtime-mini"


async def test_handshake_keeps_a_model_already_in_the_url() -> None:
    async with realtime_server() as fake:
        url = f"{fake.url}?model=my-deployment&x=1"
        async with started_pipeline(fake, url=url):
            pass

    assert fake.path == "/v1/realtime?model=my-deployment&x=1"


async def test_session_is_configured_with_the_prompt_voice_vad_transcription_and_tools() -> None:
    async with realtime_server() as fake, started_pipeline(fake, voice="cedar", vadSilenceDuration="0.4s"):
        update = await fake.next("session.update")

    session = update["session"]
    assert session["type"] == "realtime"
    assert session["model"] == "gpt-realtime"
    assert session["instructions"] == CALL_INFO.system_prompt
    assert session["audio"]["output"]["voice"] == "cedar"
    assert session["audio"]["input"]["turn_detection"] == {"type": "server_vad", "silence_duration_ms": 400}
    assert session["audio"]["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe"}
    assert [tool["name"] for tool in session["tools"]] == ["hangUp", "coldTransfer", "playDtmfSounds"]
    assert session["tool_choice"] == "auto"


async def test_session_without_a_transcribe_model_asks_for_no_transcription() -> None:
    async with realtime_server() as fake, started_pipeline(fake, transcribeModel=None):
        update = await fake.next("session.update")

    assert "transcription" not in update["session"]["audio"]["input"]


async def test_mulaw_call_configures_a_pcmu_session_both_ways() -> None:
    async with realtime_server() as fake, started_pipeline(fake, PCMU_8K):
        pass

    assert fake.session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert fake.session["audio"]["output"]["format"] == {"type": "audio/pcmu"}


async def test_alaw_call_configures_a_pcma_session_both_ways() -> None:
    async with realtime_server() as fake, started_pipeline(fake, PCMA_8K):
        pass

    assert fake.session["audio"]["input"]["format"] == {"type": "audio/pcma"}
    assert fake.session["audio"]["output"]["format"] == {"type": "audio/pcma"}


async def test_pcm_call_configures_a_24khz_pcm_session_both_ways() -> None:
    async with realtime_server() as fake, started_pipeline(fake, PCM_24K):
        pass

    assert fake.session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert fake.session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}


async def test_a_format_the_session_cannot_speak_is_refused_before_connecting() -> None:
    async with realtime_server() as fake:
        with pytest.raises(ValueError, match="PCM16 24 kHz"):
            async with started_pipeline(fake, pcm16(16000)):
                pass

        assert fake.headers is None


async def test_mulaw_caller_audio_is_appended_unchanged() -> None:
    frame = bytes(range(160))
    async with realtime_server() as fake, started_pipeline(fake, PCMU_8K) as pipeline:
        await pipeline.send_audio(frame)
        append = await fake.next("input_audio_buffer.append")

    assert decoded(append) == frame


async def test_mulaw_agent_audio_arrives_unchanged() -> None:
    async with realtime_server() as fake, started_pipeline(fake, PCMU_8K) as pipeline:
        await pipeline.speak()
        chunks = [await next_event(pipeline) for _ in range(3)]

    assert chunks == [AgentAudio(bytes([n]) * 160) for n in (1, 2, 3)]


async def test_pcm_caller_audio_is_appended_unchanged() -> None:
    frame = bytes(range(256)) * 3 + bytes(192)  # 20 ms at 24 kHz
    async with realtime_server() as fake, started_pipeline(fake, PCM_24K) as pipeline:
        await pipeline.send_audio(frame)
        append = await fake.next("input_audio_buffer.append")

    assert decoded(append) == frame


async def test_pcm_agent_audio_arrives_unchanged() -> None:
    async with realtime_server() as fake, started_pipeline(fake, PCM_24K) as pipeline:
        await pipeline.speak()
        chunks = [await next_event(pipeline) for _ in range(3)]

    assert chunks == [AgentAudio(bytes([n]) * 960) for n in (1, 2, 3)]


async def test_a_closed_session_is_freed_by_reference_counting_alone(no_cycle_collector: None) -> None:
    # Left in a reference cycle, the session would wait for the collector's full pass, which pauses calls.
    async with realtime_server() as fake:
        async with started_pipeline(fake) as pipeline:
            await fake.next("session.update")
            await pipeline.send_audio(b"\xff" * 160)
            session = weakref.ref(pipeline)
        del pipeline

        async def freed() -> bool:
            return session() is None

        await wait_for(freed)
