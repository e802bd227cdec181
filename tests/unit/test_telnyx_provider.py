"""Telnyx: the media-streaming framing, reordering, the Ed25519 webhook check and the TeXML answer."""

from __future__ import annotations

import base64
import time
import xml.etree.ElementTree as ET

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from telnyx.lib.webhook_verification import WebhookVerificationError, verify_webhook_signature

from app.media.formats import PCMA_8K, PCMU_8K, AudioFormat, Encoding
from app.providers.base import (
    FrameError,
    StreamAudio,
    StreamDtmf,
    StreamIgnored,
    StreamMark,
    StreamProviderError,
    StreamStart,
    StreamStop,
)
from app.providers.telnyx import TelnyxFraming, TelnyxProvider, verify_ed25519
from app.schemas.telephony import TelnyxConfig
from app.simulator.telnyx import FakeTelnyx

STREAM_ID = "32DE0DEA-53CB-4B21-89A4-9E1819C043BC"


def start(encoding: str = "L16", rate: int = 16000, sequence: str = "1") -> bytes:
    return orjson.dumps(
        {
            "event": "start",
            "sequence_number": sequence,
            "stream_id": STREAM_ID,
            "start": {
                "call_control_id": "v3:abc",
                "custom_parameters": {"customer": "42"},
                "media_format": {"encoding": encoding, "sample_rate": rate, "channels": 1},
            },
        }
    )


def media(sequence: int, payload: bytes, track: str = "inbound") -> bytes:
    body = {
        "track": track,
        "chunk": str(sequence),
        "timestamp": "0",
        "payload": base64.b64encode(payload).decode(),
    }
    return orjson.dumps(
        {"event": "media", "sequence_number": str(sequence), "stream_id": STREAM_ID, "media": body}
    )


def started(encoding: str = "L16", rate: int = 16000) -> TelnyxFraming:
    framing = TelnyxFraming()
    framing.decode(start(encoding, rate))
    return framing


def test_start_reads_the_top_level_stream_id_and_the_call_control_id() -> None:
    event = TelnyxFraming().decode(start())
    assert event == StreamStart(
        STREAM_ID, "v3:abc", AudioFormat(Encoding.L16, 16000, "big"), {"customer": "42"}
    )


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [("PCMU", PCMU_8K), ("audio/x-mulaw", PCMU_8K), ("PCMA", PCMA_8K), ("audio/x-alaw", PCMA_8K)],
)
def test_codec_names_and_the_older_mime_spellings_are_understood(
    encoding: str, expected: AudioFormat
) -> None:
    event = TelnyxFraming().decode(start(encoding, 8000))
    assert isinstance(event, StreamStart) and event.audio_format == expected


def test_l16_byte_order_is_configurable() -> None:
    event = TelnyxFraming("little").decode(start())
    assert isinstance(event, StreamStart) and event.audio_format.byte_order == "little"


def test_a_codec_callbridge_cannot_decode_is_a_frame_error() -> None:
    with pytest.raises(FrameError):
        TelnyxFraming().decode(start("OPUS", 48000))


def test_in_order_media_passes_straight_through() -> None:
    framing = started()
    assert framing.decode(media(2, b"\x00\x01")) == StreamAudio(b"\x00\x01")
    assert framing.decode(media(3, b"\x00\x02")) == StreamAudio(b"\x00\x02")


def test_media_arriving_early_waits_for_the_frame_before_it() -> None:
    framing = started()
    assert framing.decode(media(3, b"BB")) is None
    assert framing.decode(media(2, b"AA")) == StreamAudio(b"AABB")


def test_numbered_events_between_media_are_not_mistaken_for_lost_audio() -> None:
    framing = started()
    assert framing.decode(media(2, b"AA")) == StreamAudio(b"AA")
    dtmf = {"event": "dtmf", "sequence_number": "3", "stream_id": STREAM_ID, "dtmf": {"digit": "7"}}
    assert framing.decode(orjson.dumps(dtmf)) == StreamDtmf("7")
    assert framing.decode(media(4, b"BB")) == StreamAudio(b"BB")


def test_outbound_track_media_is_ignored() -> None:
    assert isinstance(started().decode(media(2, b"AA", track="outbound")), StreamIgnored)


def test_marks_stop_and_error_frames_become_events() -> None:
    framing = started()
    mark = {"event": "mark", "sequence_number": "2", "stream_id": STREAM_ID, "mark": {"name": "cb-1"}}
    error = {
        "event": "error",
        "sequence_number": "3",
        "stream_id": STREAM_ID,
        "error": {"title": "malformed_frame", "code": "100003", "detail": "bad json"},
    }
    stop = {"event": "stop", "sequence_number": "4", "stream_id": STREAM_ID, "stop": {}}
    assert framing.decode(orjson.dumps(mark)) == StreamMark("cb-1")
    assert framing.decode(orjson.dumps(error)) == StreamProviderError("100003", "malformed_frame bad json")
    assert framing.decode(orjson.dumps(stop)) == StreamStop("stop")


def test_error_details_under_payload_are_read_too() -> None:
    error = {"event": "error", "payload": {"code": "100005", "title": "rate_limit_reached"}}
    assert started().decode(orjson.dumps(error)) == StreamProviderError("100005", "rate_limit_reached")


def test_outbound_messages_carry_no_stream_id() -> None:
    framing = started()
    assert orjson.loads(framing.encode_audio(b"\x01\x02")) == {"event": "media", "media": {"payload": "AQI="}}
    assert orjson.loads(framing.encode_mark("cb-1")) == {"event": "mark", "mark": {"name": "cb-1"}}
    assert orjson.loads(framing.encode_clear()) == {"event": "clear"}


def test_outbound_chunks_are_whole_20ms_frames() -> None:
    framing = started()
    assert framing.rules.pad_partial_chunks
    assert framing.rules.chunk_bytes(AudioFormat(Encoding.L16, 16000, "big")) == 640


# --- signatures -------------------------------------------------------------------------------

KEY = Ed25519PrivateKey.from_private_bytes(b"k" * 32)
FAKE = FakeTelnyx("https://bridge.example.com", KEY)
BODY = b"CallSid=v3%3Aabc&From=%2B15551230000"


def sdk_accepts(body: bytes, headers: dict[str, str], public_key: str) -> bool:
    try:
        verify_webhook_signature(body, headers, public_key)
    except WebhookVerificationError:
        return False
    return True


@pytest.mark.parametrize(
    "case",
    ["valid", "other body", "other key", "stale", "future", "garbled signature", "no timestamp"],
)
def test_our_check_agrees_with_the_telnyx_sdk(case: str) -> None:
    now = int(time.time())
    body, key, stamp = BODY, FAKE.public_key, now
    if case == "stale":
        stamp = now - 301
    elif case == "future":
        stamp = now + 301
    headers = FAKE.signature_headers(BODY, stamp)
    if case == "other body":
        body = BODY + b"&To=1"
    elif case == "other key":
        key = FakeTelnyx("https://x").public_key
    elif case == "garbled signature":
        headers["telnyx-signature-ed25519"] = "not base64!"
    elif case == "no timestamp":
        del headers["telnyx-timestamp"]
    ours = verify_ed25519(body, headers, key, time.time())
    assert ours == sdk_accepts(body, headers, key) == (case == "valid")


def test_a_malformed_public_key_is_refused_at_import() -> None:
    with pytest.raises(ValueError, match="publicKey"):
        TelnyxConfig(apiKey="k", publicKey=base64.b64encode(b"short").decode())


# --- TeXML ------------------------------------------------------------------------------------


def stream_of(config: TelnyxConfig) -> ET.Element:
    xml = TelnyxProvider().connect_xml("wss://bridge.example.com/calls/c1/stream/tok", "c1", config)
    element = ET.fromstring(xml).find("./Connect/Stream")
    assert element is not None
    return element


def test_texml_asks_for_hd_l16_both_ways_by_default() -> None:
    stream = stream_of(TelnyxConfig(apiKey="k", publicKey=FAKE.public_key))
    assert stream.attrib == {
        "url": "wss://bridge.example.com/calls/c1/stream/tok",
        "bidirectionalMode": "rtp",
        "codec": "L16",
        "bidirectionalCodec": "L16",
        "bidirectionalSamplingRate": "16000",
    }


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_texml_can_ask_for_g711_at_8khz(codec: str) -> None:
    stream = stream_of(TelnyxConfig(apiKey="k", publicKey=FAKE.public_key, streamCodec=codec))
    assert (stream.get("codec"), stream.get("bidirectionalCodec")) == (codec, codec)
    assert stream.get("bidirectionalSamplingRate") == "8000"
