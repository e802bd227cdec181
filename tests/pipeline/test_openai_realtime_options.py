"""The `openaiRealtime` options, format negotiation, and the agent-audio timeline behind barge-in."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.media.formats import PCMA_8K, PCMU_8K, AudioFormat, pcm16
from app.media.path import negotiate
from app.pipeline import BACKENDS, build_pipeline
from app.pipeline.openai_realtime import OpenAIRealtimeOptions, OpenAIRealtimePipeline, realtime_url
from app.pipeline.realtime_events import PCM_24K, AgentAudioTimeline, Cut

# --- options ------------------------------------------------------------------------------------


def test_backend_is_registered_as_openai_realtime() -> None:
    pipeline = build_pipeline({"openaiRealtime": {"apiKeyEnv": "OPENAI_API_KEY"}})

    assert isinstance(pipeline, OpenAIRealtimePipeline)
    assert BACKENDS["openaiRealtime"][0] is OpenAIRealtimeOptions


def test_options_default_to_openai_gpt_realtime_with_marin() -> None:
    options = OpenAIRealtimeOptions.model_validate({})

    assert (options.url, options.model, options.voice) == (
        "wss://api.openai.com/v1/realtime",
        "gpt-realtime",
        "marin",
    )
    assert options.transcribe_model == "gpt-4o-mini-transcribe"
    assert options.connect_timeout == 5.0


def test_options_take_camel_case_names() -> None:
    options = OpenAIRealtimeOptions.model_validate(
        {"apiKey": "sk-1", "transcribeModel": "whisper-1", "connectTimeout": "2s", "vadThreshold": 0.7}
    )

    assert (options.api_key, options.transcribe_model, options.connect_timeout) == ("sk-1", "whisper-1", 2.0)
    assert options.turn_detection() == {"type": "server_vad", "threshold": 0.7}


def test_options_refuse_both_a_key_and_a_key_variable() -> None:
    with pytest.raises(ValidationError, match="apiKey or apiKeyEnv"):
        OpenAIRealtimeOptions.model_validate({"apiKey": "sk-1", "apiKeyEnv": "OPENAI_API_KEY"})


def test_options_refuse_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="temperature"):
        OpenAIRealtimeOptions.model_validate({"temperature": 0.8})


def test_options_refuse_a_non_websocket_url() -> None:
    with pytest.raises(ValidationError, match="ws:// or wss://"):
        OpenAIRealtimeOptions.model_validate({"url": "https://api.openai.com/v1/realtime"})


def test_api_key_is_kept_out_of_the_options_repr() -> None:
    assert "sk-secret" not in repr(OpenAIRealtimeOptions.model_validate({"apiKey": "sk-secret"}))


def test_realtime_url_adds_the_model_query() -> None:
    assert (
        realtime_url("wss://host/v1/realtime", "gpt-realtime") == "wss://host/v1/realtime?model=gpt-realtime"
    )


def test_realtime_url_keeps_other_query_parameters() -> None:
    url = realtime_url("wss://host/openai/v1/realtime?api-version=x", "gpt-realtime")

    assert url == "wss://host/openai/v1/realtime?api-version=x&model=gpt-realtime"


# --- formats ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "agent"),
    [
        (PCMU_8K, PCMU_8K),
        (PCMA_8K, PCMA_8K),
        (pcm16(8000), PCM_24K),
        (pcm16(16000), PCM_24K),
        (pcm16(24000), PCM_24K),
    ],
)
def test_g711_wires_pass_through_and_others_become_24khz_pcm(wire: AudioFormat, agent: AudioFormat) -> None:
    assert negotiate(wire, OpenAIRealtimePipeline.accepted_formats) == agent


# --- the agent-audio timeline -------------------------------------------------------------------


def test_timeline_cut_is_what_was_played_of_the_current_item() -> None:
    timeline = AgentAudioTimeline()
    timeline.add("a", 500.0)
    timeline.played(500.0)
    timeline.add("b", 800.0)
    timeline.played(700.0)

    assert timeline.interrupt() == Cut("b", 200)


def test_timeline_cut_before_the_item_was_reached_is_zero() -> None:
    timeline = AgentAudioTimeline()
    timeline.add("a", 500.0)
    timeline.add("b", 300.0)
    timeline.played(400.0)

    assert timeline.interrupt() == Cut("b", 0)


def test_timeline_cut_never_exceeds_the_item() -> None:
    timeline = AgentAudioTimeline()
    timeline.add("a", 300.0)
    timeline.played(300.0)

    assert timeline.interrupt() == Cut("a", 300)


def test_timeline_continues_from_what_was_heard_after_a_cut() -> None:
    timeline = AgentAudioTimeline()
    timeline.add("a", 1000.0)
    timeline.played(400.0)
    timeline.interrupt()
    timeline.add("b", 600.0)
    timeline.played(700.0)

    assert timeline.interrupt() == Cut("b", 300)


def test_timeline_catches_up_when_the_bridge_kept_more_than_the_last_report() -> None:
    timeline = AgentAudioTimeline()
    timeline.add("a", 1000.0)
    timeline.played(400.0)
    timeline.interrupt()  # the bridge actually cut at 450 ms
    timeline.add("b", 600.0)
    timeline.played(1050.0)  # b played in full: 450 + 600
    timeline.add("b", 200.0)
    timeline.played(1150.0)

    assert timeline.interrupt() == Cut("b", 700)


def test_timeline_with_no_agent_audio_has_nothing_to_cut() -> None:
    assert AgentAudioTimeline().interrupt() is None
