"""Every provider framing's `decode`, fed anything: a typed StreamEvent (or None where Telnyx's reordering
holds a frame back) or FrameError, never another exception; and the events carry the types they declare.

Random bytes and text rarely look like a frame, so most examples are JSON objects built from the providers'
own field names and values (`start`, `mediaFormat`, `sequence_number`, base64 payloads...), with any JSON
value in any place, fed as a sequence to one framing (decoding is stateful: a start, the reorderer).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.providers import get_provider
from app.providers.base import (
    DTMF_DIGITS,
    FrameError,
    StreamAudio,
    StreamDtmf,
    StreamEvent,
    StreamFraming,
    StreamMark,
    StreamStart,
)

#: (provider, stream options): every framing callbridge has, with the options that change its decoding.
FRAMINGS: list[tuple[str, dict[str, Any]]] = [
    ("twilio", {}),
    ("telnyx", {}),
    ("telnyx", {"l16ByteOrder": "little"}),
    ("plivo", {}),
    ("exotel", {"sample-rate": "16000"}),
    ("serverWebSocket", {"inputSampleRate": 16000}),
]
#: Only these framings may hold a frame back (None).
REORDERING = {"telnyx"}

FIELD_NAMES = [
    "event", "type", "media", "payload", "track", "chunk", "timestamp", "sequence_number", "sequenceNumber",
    "start", "streamSid", "callSid", "accountSid", "mediaFormat", "encoding", "sampleRate", "channels",
    "customParameters", "stream_id", "call_control_id", "media_format", "sample_rate", "custom_parameters",
    "streamId", "callId", "extra_headers", "stream_sid", "call_sid", "mark", "name", "dtmf", "digit", "stop",
    "reason", "error", "code", "title", "detail", "text", "contentType",
]  # fmt: skip
WORDS = [
    "start", "media", "mark", "dtmf", "stop", "connected", "error", "playedStream", "clearedAudio",
    "user_text_message", "ping", "hang_up", "inbound", "outbound", "inbound_track", "outbound_track",
    "audio/x-mulaw", "audio/x-alaw", "audio/x-l16", "audio/x-l16;rate=16000", "PCMU", "PCMA", "L16", "raw",
    "8000", "16000", "24000", "44100", "1", "#", "x", "", "MZ1", "CA1", "a=b;c=d",
]  # fmt: skip

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
base64_audio = st.binary(max_size=48).map(lambda raw: base64.b64encode(raw).decode())
leaf_values = json_scalars | st.sampled_from(WORDS) | base64_audio | st.sampled_from([8000, 16000, 24000])
json_values = st.recursive(
    leaf_values,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(FIELD_NAMES), inner, max_size=5)
    ),
    max_leaves=16,
)
#: The events the framings know, each usually carrying an object of its own name (`{"event": "start",
#: "start": {...}}`), so that most examples reach the code past the event name.
EVENTS = [
    "start", "media", "mark", "dtmf", "stop", "connected", "error", "playedStream", "clearedAudio",
    "user_text_message", "ping", "hang_up",
]  # fmt: skip
frame_objects = st.builds(
    lambda name, body, fields: {**fields, name: body, "event": name, "type": name},
    st.sampled_from(EVENTS) | st.text(max_size=8),
    json_values,
    st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=6),
)
messages: st.SearchStrategy[str | bytes] = st.one_of(
    frame_objects.map(lambda frame: orjson.dumps(frame).decode()),
    frame_objects.map(orjson.dumps),  # the same frames as binary messages
    json_values.map(lambda value: orjson.dumps(value).decode()),
    st.text(max_size=64),
    st.binary(max_size=64),
)


def new_framing(provider: str, options: dict[str, Any]) -> StreamFraming:
    found = get_provider(provider)
    assert found is not None
    return found.new_framing(options)


def check_types(event: StreamEvent) -> None:
    """The event's fields hold what they declare (a list where a str belongs would fail far from here)."""
    if isinstance(event, StreamStart):
        assert isinstance(event.stream_id, str) and event.stream_id
        assert event.provider_call_id is None or isinstance(event.provider_call_id, str)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in event.custom_parameters.items())
    elif isinstance(event, StreamAudio):
        assert isinstance(event.payload, bytes)
    elif isinstance(event, StreamDtmf):
        assert event.digit in DTMF_DIGITS
    elif isinstance(event, StreamMark):
        assert isinstance(event.name, str)


def decode_or_frame_error(framing: StreamFraming, message: str | bytes) -> StreamEvent | FrameError | None:
    try:
        return framing.decode(message)
    except FrameError as error:
        return error


PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize(("provider", "options"), FRAMINGS, ids=[f"{p}{o or ''}" for p, o in FRAMINGS])
@PROPERTY_SETTINGS
@given(sequence=st.lists(messages, min_size=1, max_size=8))
def test_decode_gives_a_typed_event_or_a_frame_error_for_any_message(
    provider: str, options: dict[str, Any], sequence: list[str | bytes]
) -> None:
    framing = new_framing(provider, options)
    for message in sequence:
        result = decode_or_frame_error(framing, message)
        if isinstance(result, FrameError):
            continue
        if result is None:
            assert provider in REORDERING, f"{provider} held back {message!r}"
            continue
        assert isinstance(result, StreamEvent), f"{provider} decoded {message!r} to {result!r}"
        check_types(result)


START_FRAMES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "twilio": lambda fmt: {
        "event": "start",
        "streamSid": "MZ1",
        "start": {"streamSid": "MZ1", "mediaFormat": fmt},
    },
    "telnyx": lambda fmt: {"event": "start", "stream_id": "s1", "start": {"media_format": fmt}},
    "plivo": lambda fmt: {"event": "start", "start": {"streamId": "s1", "mediaFormat": fmt}},
    "exotel": lambda fmt: {"event": "start", "stream_sid": "s1", "start": {"media_format": fmt}},
}


@pytest.mark.parametrize("provider", sorted(START_FRAMES))
@PROPERTY_SETTINGS
@given(
    media_format=st.dictionaries(
        st.sampled_from(["encoding", "sampleRate", "sample_rate", "channels"]), json_values, max_size=3
    ),
    payload=st.binary(max_size=64),
)
def test_a_start_with_any_media_format_either_starts_a_stream_that_encodes_or_is_a_frame_error(
    provider: str, media_format: dict[str, Any], payload: bytes
) -> None:
    framing = new_framing(provider, {})
    start = decode_or_frame_error(framing, orjson.dumps(START_FRAMES[provider](media_format)).decode())
    if isinstance(start, FrameError):
        return
    assert isinstance(start, StreamStart)
    check_types(start)
    for outbound in (framing.encode_audio(payload), framing.encode_mark("m1"), framing.encode_clear()):
        assert isinstance(orjson.loads(outbound), dict)


#: Starts whose parts are not what they must be: each once crashed its provider's decode_start.
MALFORMED_STARTS = [
    ("twilio", {"event": "start", "start": None}),
    ("twilio", {"event": "start", "start": {"streamSid": "MZ1", "mediaFormat": ["audio/x-mulaw"]}}),
    ("twilio", {"event": "start", "start": {"streamSid": "MZ1", "mediaFormat": {"sampleRate": None}}}),
    ("twilio", {"event": "start", "start": {"streamSid": "MZ1", "mediaFormat": {"sampleRate": "8k"}}}),
    ("telnyx", {"event": "start", "stream_id": "s1", "start": None}),
    ("telnyx", {"event": "start", "stream_id": "s1", "start": {"media_format": "PCMU"}}),
    ("plivo", {"event": "start", "start": None}),
    ("plivo", {"event": "start", "start": {"streamId": "s1", "mediaFormat": [16000]}}),
    ("exotel", {"event": "start", "stream_sid": "s1", "start": {"media_format": "raw"}}),
]


@pytest.mark.parametrize(("provider", "frame"), MALFORMED_STARTS)
def test_a_start_with_a_part_that_is_not_an_object_or_number_is_a_frame_error(
    provider: str, frame: dict[str, Any]
) -> None:
    with pytest.raises(FrameError):
        new_framing(provider, {}).decode(orjson.dumps(frame).decode())


@pytest.mark.parametrize("provider", ["twilio", "telnyx", "plivo", "exotel"])
@pytest.mark.parametrize("media", [None, "AAAA", [], {"track": ["inbound"], "payload": ""}], ids=repr)
def test_a_media_frame_that_is_not_an_object_or_has_a_non_string_track_is_a_frame_error(
    provider: str, media: Any
) -> None:
    with pytest.raises(FrameError):
        new_framing(provider, {}).decode(orjson.dumps({"event": "media", "media": media}).decode())


@pytest.mark.parametrize(
    ("provider", "frame"),
    [
        ("twilio", {"event": "start", "start": {"streamSid": "MZ1", "callSid": ["CA1"]}}),
        ("telnyx", {"event": "start", "stream_id": "s1", "start": {"call_control_id": {"id": 1}}}),
        ("plivo", {"event": "start", "start": {"streamId": "s1", "callId": []}}),
        ("exotel", {"event": "start", "stream_sid": "s1", "start": {"call_sid": 7}}),
    ],
)
def test_a_call_id_that_is_not_a_string_is_left_out_of_the_start(
    provider: str, frame: dict[str, Any]
) -> None:
    start = new_framing(provider, {}).decode(orjson.dumps(frame).decode())
    assert isinstance(start, StreamStart) and start.provider_call_id is None
