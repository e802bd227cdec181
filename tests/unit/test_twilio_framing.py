"""Twilio Media Streams framing: every documented event parses; bad messages raise FrameError."""

from __future__ import annotations

import base64

import orjson
import pytest

from app.media.formats import PCMU_8K
from app.providers.base import (
    FrameError,
    StreamAudio,
    StreamConnected,
    StreamDtmf,
    StreamIgnored,
    StreamMark,
    StreamStart,
    StreamStop,
)
from app.providers.twilio import TwilioFraming

STREAM_SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
START = {
    "event": "start",
    "sequenceNumber": "1",
    "streamSid": STREAM_SID,
    "start": {
        "accountSid": "AC123",
        "streamSid": STREAM_SID,
        "callSid": "CA123",
        "tracks": ["inbound"],
        "customParameters": {"callId": "abc"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
}


def msg(**fields: object) -> str:
    return orjson.dumps(fields).decode()


@pytest.fixture
def framing() -> TwilioFraming:
    f = TwilioFraming()
    f.decode(orjson.dumps(START))
    return f


def test_connected_is_recognised() -> None:
    assert (
        TwilioFraming().decode(msg(event="connected", protocol="Call", version="1.0.0")) == StreamConnected()
    )


def test_start_gives_stream_call_format_and_custom_parameters() -> None:
    event = TwilioFraming().decode(orjson.dumps(START))
    assert event == StreamStart(STREAM_SID, "CA123", PCMU_8K, {"callId": "abc"})


def test_media_payload_is_decoded_from_base64(framing: TwilioFraming) -> None:
    payload = bytes(range(160))
    message = msg(
        event="media",
        sequenceNumber="4",
        streamSid=STREAM_SID,
        media={
            "track": "inbound",
            "chunk": "2",
            "timestamp": "5",
            "payload": base64.b64encode(payload).decode(),
        },
    )
    assert framing.decode(message) == StreamAudio(payload)


def test_outbound_track_media_is_ignored(framing: TwilioFraming) -> None:
    message = msg(event="media", streamSid=STREAM_SID, media={"track": "outbound", "payload": "AAAA"})
    assert isinstance(framing.decode(message), StreamIgnored)


def test_dtmf_mark_and_stop_are_recognised(framing: TwilioFraming) -> None:
    assert framing.decode(
        msg(event="dtmf", streamSid=STREAM_SID, dtmf={"track": "inbound_track", "digit": "#"})
    ) == StreamDtmf("#")
    assert framing.decode(msg(event="mark", streamSid=STREAM_SID, mark={"name": "cb-1"})) == StreamMark(
        "cb-1"
    )
    assert framing.decode(msg(event="stop", streamSid=STREAM_SID, stop={"callSid": "CA123"})) == StreamStop(
        "stop"
    )


def test_unknown_event_is_ignored_not_an_error(framing: TwilioFraming) -> None:
    assert framing.decode(msg(event="something-new", streamSid=STREAM_SID)) == StreamIgnored("something-new")


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "no 'event'"),
        (msg(streamSid=STREAM_SID), "no 'event'"),
        (msg(event="media", streamSid=STREAM_SID), "no 'media'"),
        (msg(event="media", media={"track": "inbound"}), "no 'payload'"),
        (msg(event="media", media={"payload": "***not base64***"}), "not valid base64"),
        (msg(event="media", media={"payload": 12}), "not a string"),
        (msg(event="dtmf", dtmf={"digit": "x"}), "unknown DTMF digit"),
        (msg(event="mark", mark={}), "no 'name'"),
        (msg(event="start", start={"mediaFormat": {}}), "no streamSid"),
        (
            msg(event="start", start={"streamSid": "MZ1", "mediaFormat": {"encoding": "audio/x-l16"}}),
            "unsupported Twilio media format",
        ),
    ],
)
def test_malformed_messages_raise_frame_error(framing: TwilioFraming, message: str, error: str) -> None:
    with pytest.raises(FrameError, match=error):
        framing.decode(message)


def test_outbound_messages_have_twilio_shapes(framing: TwilioFraming) -> None:
    assert orjson.loads(framing.encode_audio(b"\x00\xff")) == {
        "event": "media",
        "streamSid": STREAM_SID,
        "media": {"payload": "AP8="},
    }
    assert orjson.loads(framing.encode_mark('a "quoted" name')) == {
        "event": "mark",
        "streamSid": STREAM_SID,
        "mark": {"name": 'a "quoted" name'},
    }
    assert orjson.loads(framing.encode_clear()) == {"event": "clear", "streamSid": STREAM_SID}


def test_nothing_can_be_sent_before_start() -> None:
    with pytest.raises(RuntimeError):
        TwilioFraming().encode_audio(b"\x00")
