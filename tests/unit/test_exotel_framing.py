"""Exotel AgentStream framing: both stream-id spellings, lenient formats, `stop.reason`, chunk rules."""

from __future__ import annotations

import orjson
import pytest

from app.media.formats import AudioFormat, Encoding, pcm16
from app.providers.base import StreamAudio, StreamDtmf, StreamMark, StreamStart, StreamStop
from app.providers.exotel import ExotelFraming, ExotelProvider


def start(sid_key: str = "stream_sid", rate: object = "8000", encoding: object = "audio/x-raw") -> bytes:
    return orjson.dumps(
        {
            "event": "start",
            "sequence_number": "1",
            sid_key: "MZ1",
            "start": {
                sid_key: "MZ1",
                "call_sid": "CA1",
                "account_sid": "AC1",
                "custom_parameters": {"k": "v"},
                "media_format": {"encoding": encoding, "sample_rate": rate, "bit_rate": "16"},
            },
        }
    )


@pytest.mark.parametrize("sid_key", ["stream_sid", "streamSid"])
def test_both_stream_id_spellings_are_accepted(sid_key: str) -> None:
    assert ExotelFraming().decode(start(sid_key)) == StreamStart("MZ1", "CA1", pcm16(8000), {"k": "v"})


@pytest.mark.parametrize(("rate", "encoding"), [("16000", "raw"), (16000, "audio/x-raw"), ("16000", "slin")])
def test_formats_are_parsed_leniently(rate: object, encoding: object) -> None:
    event = ExotelFraming().decode(start(rate=rate, encoding=encoding))
    assert isinstance(event, StreamStart) and event.audio_format == pcm16(16000)


def test_the_rate_asked_for_in_the_url_is_used_when_the_start_names_none() -> None:
    framing = ExotelProvider().new_framing({"sample-rate": "24000"})
    event = framing.decode(start(rate="unknown"))
    assert isinstance(event, StreamStart) and event.audio_format == pcm16(24000)


def test_media_dtmf_mark_and_stop_with_its_reason() -> None:
    framing = ExotelFraming()
    framing.decode(start())
    media = {
        "event": "media",
        "stream_sid": "MZ1",
        "media": {"chunk": "1", "timestamp": "0", "payload": "AAA="},
    }
    assert framing.decode(orjson.dumps(media)) == StreamAudio(b"\x00\x00")
    assert framing.decode(
        orjson.dumps({"event": "dtmf", "dtmf": {"digit": "5", "duration": "100"}})
    ) == StreamDtmf("5")
    assert framing.decode(orjson.dumps({"event": "mark", "mark": {"name": "cb-1"}})) == StreamMark("cb-1")
    stop = {"event": "stop", "stop": {"reason": "callended"}}
    assert framing.decode(orjson.dumps(stop)) == StreamStop("callended")


def test_outbound_messages_carry_the_stream_sid() -> None:
    framing = ExotelFraming()
    framing.decode(start())
    assert orjson.loads(framing.encode_audio(b"\x00\x00")) == {
        "event": "media",
        "stream_sid": "MZ1",
        "media": {"payload": "AAA="},
    }
    assert orjson.loads(framing.encode_clear()) == {"event": "clear", "stream_sid": "MZ1"}


@pytest.mark.parametrize(("rate", "expected"), [(8000, 3200), (16000, 3200), (24000, 4800)])
def test_chunks_are_multiples_of_320_bytes_of_at_least_3200(rate: int, expected: int) -> None:
    size = ExotelFraming.rules.chunk_bytes(AudioFormat(Encoding.L16, rate))
    assert size == expected and size % 320 == 0
    assert ExotelFraming().rules.pad_partial_chunks
