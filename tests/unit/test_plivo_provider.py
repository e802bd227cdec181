"""Plivo: the Audio Stream framing, V3 signatures (plivo-python's own check) and the `<Stream>` answer."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

import orjson
import pytest
from starlette.datastructures import FormData

from app.media.formats import PCMU_8K, AudioFormat, Encoding
from app.providers.base import (
    StreamAudio,
    StreamDtmf,
    StreamIgnored,
    StreamMark,
    StreamStart,
    StreamStop,
    WebhookRequest,
)
from app.providers.plivo import PlivoFraming, PlivoProvider, parse_extra_headers
from app.schemas.telephony import PlivoConfig
from app.simulator.plivo import FakePlivo

STREAM_ID = "20170ada-f610-433b-8758-c02a2aab3662"
CONFIG = PlivoConfig(authId="MA123", authToken="plivo-token")


def start(encoding: str = "audio/x-l16", rate: int = 16000) -> bytes:
    return orjson.dumps(
        {
            "event": "start",
            "sequenceNumber": 1,
            "start": {
                "callId": "call-uuid",
                "streamId": STREAM_ID,
                "accountId": "MA123",
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": encoding, "sampleRate": rate},
            },
            "extra_headers": "tenant=abc;callRef=42",
        }
    )


def started(encoding: str = "audio/x-l16", rate: int = 16000) -> PlivoFraming:
    framing = PlivoFraming()
    framing.decode(start(encoding, rate))
    return framing


def test_start_reads_stream_call_format_and_extra_headers() -> None:
    event = PlivoFraming().decode(start())
    assert event == StreamStart(
        STREAM_ID, "call-uuid", AudioFormat(Encoding.L16, 16000, "little"), {"tenant": "abc", "callRef": "42"}
    )


def test_mulaw_streams_are_understood() -> None:
    event = PlivoFraming().decode(start("audio/x-mulaw", 8000))
    assert isinstance(event, StreamStart) and event.audio_format == PCMU_8K


def test_l16_byte_order_is_configurable() -> None:
    event = PlivoFraming("big").decode(start())
    assert isinstance(event, StreamStart) and event.audio_format.byte_order == "big"


@pytest.mark.parametrize("value", ["a=1;b=2", "a=1,b=2", "a=1; b=2", "a=1,,b=2;"])
def test_extra_headers_split_on_both_separators(value: str) -> None:
    assert parse_extra_headers(value) == {"a": "1", "b": "2"}


def test_media_dtmf_and_played_stream_become_events() -> None:
    framing = started()
    payload = base64.b64encode(b"\x01\x00").decode()
    media = {
        "event": "media",
        "sequenceNumber": 2,
        "streamId": STREAM_ID,
        "media": {"track": "inbound", "timestamp": "1705312200000", "chunk": 1, "payload": payload},
    }
    dtmf = {
        "event": "dtmf",
        "sequenceNumber": 3,
        "streamId": STREAM_ID,
        "dtmf": {"track": "inbound", "digit": "5"},
    }
    played = {"event": "playedStream", "sequenceNumber": 4, "streamId": STREAM_ID, "name": "cb-1"}
    assert framing.decode(orjson.dumps(media)) == StreamAudio(b"\x01\x00")
    assert framing.decode(orjson.dumps(dtmf)) == StreamDtmf("5")
    assert framing.decode(orjson.dumps(played)) == StreamMark("cb-1")


def test_cleared_audio_is_acknowledged_quietly_and_a_stray_stop_is_tolerated() -> None:
    framing = started()
    assert framing.decode(orjson.dumps({"event": "clearedAudio", "streamId": STREAM_ID})) == StreamIgnored(
        "clearedAudio"
    )
    assert framing.decode(orjson.dumps({"event": "stop"})) == StreamStop("stop")


def test_play_audio_names_the_streams_content_type_and_rate() -> None:
    message = orjson.loads(started().encode_audio(b"\x01\x00"))
    assert message == {
        "event": "playAudio",
        "media": {"contentType": "audio/x-l16", "sampleRate": 16000, "payload": "AQA="},
    }
    mulaw = orjson.loads(started("audio/x-mulaw", 8000).encode_audio(b"\xff"))
    assert mulaw["media"]["contentType"] == "audio/x-mulaw" and mulaw["media"]["sampleRate"] == 8000


def test_checkpoint_and_clear_audio_carry_the_stream_id() -> None:
    framing = started()
    assert orjson.loads(framing.encode_mark("cb-1")) == {
        "event": "checkpoint",
        "streamId": STREAM_ID,
        "name": "cb-1",
    }
    assert orjson.loads(framing.encode_clear()) == {"event": "clearAudio", "streamId": STREAM_ID}
    assert not framing.rules.clear_returns_marks


# --- signatures -------------------------------------------------------------------------------

URL = "https://bridge.example.com/api/agents/a1/telephony_xml"
PARAMS = {"CallUUID": "call-uuid", "From": "15551230000", "To": "15559870000", "Direction": "inbound"}
FAKE = FakePlivo("https://bridge.example.com", "MA123", "plivo-token")


def request(url: str, params: dict[str, str], headers: dict[str, str]) -> WebhookRequest:
    return WebhookRequest(
        url, "POST", {k.lower(): v for k, v in headers.items()}, b"", FormData(list(params.items()))
    )


def test_a_request_signed_with_the_sdk_verifies() -> None:
    assert PlivoProvider().verify(request(URL, PARAMS, FAKE.sign(URL, b"", PARAMS)), CONFIG)


def test_the_signature_covers_the_query_string() -> None:
    url = URL + "?provider=plivo"
    assert PlivoProvider().verify(request(url, PARAMS, FAKE.sign(url, b"", PARAMS)), CONFIG)
    assert not PlivoProvider().verify(request(URL, PARAMS, FAKE.sign(url, b"", PARAMS)), CONFIG)


def test_any_of_several_signatures_may_match() -> None:
    headers = FAKE.sign(URL, b"", PARAMS)
    headers["X-Plivo-Signature-V3"] = "bm90LWl0," + headers["X-Plivo-Signature-V3"]
    assert PlivoProvider().verify(request(URL, PARAMS, headers), CONFIG)


@pytest.mark.parametrize("tamper", ["params", "nonce", "token"])
def test_a_tampered_request_fails(tamper: str) -> None:
    headers = FAKE.sign(URL, b"", PARAMS)
    params = dict(PARAMS)
    config = CONFIG
    if tamper == "params":
        params["From"] = "15550000000"
    elif tamper == "nonce":
        headers["X-Plivo-Signature-V3-Nonce"] += "1"
    else:
        config = PlivoConfig(authId="MA123", authToken="another-token")
    assert not PlivoProvider().verify(request(URL, params, headers), config)


# --- XML --------------------------------------------------------------------------------------


def stream_of(config: PlivoConfig) -> ET.Element:
    xml = PlivoProvider().connect_xml("wss://bridge.example.com/calls/c1/stream/tok", "c1", config)
    element = ET.fromstring(xml).find("./Stream")
    assert element is not None
    return element


def test_the_stream_is_bidirectional_kept_alive_and_hd_by_default() -> None:
    stream = stream_of(CONFIG)
    assert stream.text == "wss://bridge.example.com/calls/c1/stream/tok"
    assert stream.get("bidirectional") == "true" and stream.get("keepCallAlive") == "true"
    assert stream.get("contentType") == "audio/x-l16;rate=16000"


def test_mulaw_8khz_can_be_chosen() -> None:
    config = PlivoConfig(authId="MA123", authToken="t", streamContentType="audio/x-mulaw;rate=8000")
    assert stream_of(config).get("contentType") == "audio/x-mulaw;rate=8000"
