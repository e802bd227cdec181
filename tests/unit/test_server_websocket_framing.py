"""serverWebSocket framing: raw PCM both ways, JSON data messages, no marks, options from the medium."""

from __future__ import annotations

import orjson
import pytest

from app.media.formats import pcm16
from app.providers.base import FrameError, StreamAudio, StreamIgnored, StreamPing, StreamStop, StreamUserText
from app.providers.server_websocket import ServerWebSocketProvider


def framing(**options: object):  # type: ignore[no-untyped-def]
    return ServerWebSocketProvider().new_framing({"inputSampleRate": 16000, **options})


def test_the_stream_starts_on_connect_with_both_rates() -> None:
    start = framing(outputSampleRate=24000).opening()
    assert start.audio_format == pcm16(16000) and start.output_format == pcm16(24000)


def test_the_output_rate_defaults_to_the_input_rate() -> None:
    assert framing().opening().output_format == pcm16(16000)


def test_binary_frames_are_caller_audio_and_agent_audio_goes_out_binary() -> None:
    f = framing()
    assert f.decode(b"\x01\x00") == StreamAudio(b"\x01\x00")
    assert f.encode_audio(b"\x01\x00") == b"\x01\x00"


def test_data_messages_from_the_client() -> None:
    f = framing()
    assert f.decode('{"type":"user_text_message","text":"hi"}') == StreamUserText("hi")
    assert f.decode('{"type":"hang_up","message":"bye"}') == StreamStop("the client hung up")
    assert f.decode('{"type":"ping","timestamp":1.5}') == StreamPing(1.5)
    assert f.decode('{"type":"set_output_medium","medium":"text"}') == StreamIgnored("set_output_medium")


@pytest.mark.parametrize("message", ["not json", '{"no":"type"}', "[1]"])
def test_malformed_data_messages_are_frame_errors(message: str) -> None:
    with pytest.raises(FrameError):
        framing().decode(message)


def test_messages_to_the_client() -> None:
    f = framing()
    assert orjson.loads(f.encode_clear()) == {"type": "playback_clear_buffer"}
    assert orjson.loads(f.encode_pong(2.0)) == {"type": "pong", "timestamp": 2.0}
    assert orjson.loads(f.encode_transcript("agent", "Hi", True)) == {
        "type": "transcript", "role": "agent", "medium": "voice", "text": "Hi", "final": True,
    }  # fmt: skip
    assert orjson.loads(f.joined_messages("c1")[0]) == {"type": "call_started", "callId": "c1"}
    assert orjson.loads(f.encode_state("speaking")) == {"type": "state", "state": "speaking"}


def test_the_client_buffer_sets_the_playout_lead_and_there_are_no_marks() -> None:
    f = framing(clientBufferSizeMs=200)
    assert f.rules.lead_ms == 200 and not f.rules.marks


def test_a_media_idle_timeout_under_10s_counts_as_10s() -> None:
    assert framing(mediaIdleTimeout="3s").media_idle_timeout_s == 10.0
    assert framing(mediaIdleTimeout="45s").media_idle_timeout_s == 45.0
    assert framing().media_idle_timeout_s is None
