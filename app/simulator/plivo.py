"""A fake Plivo: V3-signed answer URL → `<Stream bidirectional keepCallAlive>` → Audio Streams.

Follows Plivo's stream protocol: numeric `sequenceNumber`, `streamId`/`callId` in `start`, `extra_headers`
as `k=v;k2=v2`, no `stop` (the socket closes); `playAudio` must name the stream's own content type and
rate, `checkpoint` is answered by `playedStream` once the audio before it played, and `clearAudio` by
`clearedAudio` (pending checkpoints are dropped).
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
import xml.etree.ElementTree as ET
from typing import Any

from plivo.utils.signature_v3 import construct_post_url, get_signature_v3

from app.media.formats import AudioFormat, Encoding
from app.simulator.carrier import (
    CallScript,
    CarrierWire,
    FakeCarrier,
    OutAudio,
    Outbound,
    OutClear,
    OutMark,
    ProtocolViolation,
    StreamSetup,
    check,
    decode_strict_base64,
)

CONTENT_TYPES = {
    "audio/x-l16;rate=8000": AudioFormat(Encoding.L16, 8000, "little"),
    "audio/x-l16;rate=16000": AudioFormat(Encoding.L16, 16000, "little"),
    "audio/x-mulaw;rate=8000": AudioFormat(Encoding.PCMU, 8000),
}
DEFAULT_CONTENT_TYPE = "audio/x-l16;rate=8000"


def mime_type(fmt: AudioFormat) -> str:
    return "audio/x-mulaw" if fmt.encoding is Encoding.PCMU else "audio/x-l16"


class PlivoWire(CarrierWire):
    provider = "plivo"
    clear_returns_marks = False
    sequence_key = "sequenceNumber"
    stream_key = "streamId"
    numbers_as_text = False

    def new_stream_id(self) -> str:
        return str(uuid.uuid4())

    def _extra_headers(self) -> str:
        return ";".join(f"{k}={v}" for k, v in self.setup.parameters.items())

    def opening(self) -> list[dict[str, Any]]:
        start = {
            "callId": self.setup.provider_call_id,
            "streamId": self.stream_id,
            "accountId": self.account_id,
            "tracks": ["inbound"],
            "mediaFormat": {
                "encoding": mime_type(self.audio_format),
                "sampleRate": self.audio_format.sample_rate,
            },
        }
        message = {"event": "start", "sequenceNumber": self.next_sequence(), "start": start}
        return [{**message, "extra_headers": self._extra_headers()}]

    def media(self, chunk: int, payload: bytes) -> dict[str, Any]:
        media = {
            "track": "inbound",
            "timestamp": str(int(time.time() * 1000)),
            "chunk": chunk,
            "payload": base64.b64encode(payload).decode(),
        }
        return self.numbered("media", media=media, extra_headers=self._extra_headers())

    def dtmf(self, digit: str) -> dict[str, Any]:
        return self.numbered(
            "dtmf", dtmf={"track": "inbound", "digit": digit, "timestamp": str(int(time.time() * 1000))}
        )

    def mark_played(self, name: str) -> dict[str, Any]:
        return self.numbered("playedStream", name=name)

    def cleared(self) -> list[dict[str, Any]]:
        return [self.numbered("clearedAudio")]

    def closing(self) -> None:
        return None  # Plivo sends no stop: the socket just closes

    def parse(self, message: dict[str, Any]) -> Outbound:
        event = message.get("event")
        if event == "playAudio":
            media = message["media"]
            check(
                media.get("contentType") == mime_type(self.audio_format)
                and media.get("sampleRate") == self.audio_format.sample_rate,
                f"playAudio as {media.get('contentType')} at {media.get('sampleRate')} on a "
                f"{mime_type(self.audio_format)} {self.audio_format.sample_rate} Hz stream is not heard",
            )
            payload = decode_strict_base64(media["payload"])
            check(len(payload) % self.audio_format.bytes_per_sample == 0, "not a whole number of samples")
            return OutAudio(payload)
        if event == "checkpoint":
            check(message.get("streamId") == self.stream_id, f"checkpoint for another stream: {message}")
            return OutMark(str(message["name"]))
        if event == "clearAudio":
            check(message.get("streamId") == self.stream_id, f"clearAudio for another stream: {message}")
            return OutClear()
        raise ProtocolViolation(f"Plivo would reject event {event!r}: {message}")


def parse_plivo_stream(xml: str) -> tuple[str, AudioFormat, dict[str, str]]:
    """(stream URL, audio format, extraHeaders) from `<Response><Stream>`, checked as Plivo would."""
    root = ET.fromstring(xml)
    stream = root.find("./Stream")
    check(stream is not None and bool((stream.text or "").strip()), f"no <Stream>URL</Stream>: {xml}")
    assert stream is not None
    check(stream.get("bidirectional") == "true", 'without bidirectional="true" Plivo plays nothing back')
    check(
        stream.get("audioTrack", "inbound") == "inbound", "a bidirectional stream must use audioTrack inbound"
    )
    content_type = stream.get("contentType", DEFAULT_CONTENT_TYPE)
    check(content_type in CONTENT_TYPES, f"unknown contentType {content_type!r}")
    extra = stream.get("extraHeaders") or ""
    headers = dict(item.split("=", 1) for item in extra.split(",") if "=" in item)
    return (stream.text or "").strip(), CONTENT_TYPES[content_type], headers


class FakePlivo(FakeCarrier):
    """A Plivo account whose number's answer URL is callbridge's telephony_xml."""

    provider = "plivo"

    def __init__(self, base_url: str, auth_id: str, auth_token: str) -> None:
        super().__init__(base_url)
        self.auth_id = auth_id
        self.auth_token = auth_token

    def new_call_id(self) -> str:
        return str(uuid.uuid4())

    def incoming_params(self, script: CallScript, provider_call_id: str) -> dict[str, str]:
        return {
            "CallUUID": provider_call_id,
            "ALegUUID": provider_call_id,
            "ALegRequestUUID": str(uuid.uuid4()),
            "From": script.from_number.lstrip("+"),
            "To": script.to_number.lstrip("+"),
            "CallStatus": "ringing",
            "Direction": "inbound",
            "Event": "StartApp",
            "BillRate": "0.0085",
        }

    def signature(self, url: str, params: dict[str, str], nonce: str, token: str | None = None) -> str:
        """Plivo's V3 signature, computed with plivo-python's own functions."""
        base = construct_post_url(url, dict(params)).decode()
        return get_signature_v3((token or self.auth_token).encode(), base, nonce.encode()).decode()

    def sign(self, url: str, body: bytes, params: dict[str, str]) -> dict[str, str]:
        nonce = str(secrets.randbelow(10**20))
        return {
            "X-Plivo-Signature-V3": self.signature(url, params, nonce),
            "X-Plivo-Signature-V3-Nonce": nonce,
        }

    def parse_xml(self, xml: str, provider_call_id: str) -> StreamSetup:
        url, fmt, headers = parse_plivo_stream(xml)
        return StreamSetup(url, fmt, provider_call_id, headers)

    def wire(self, setup: StreamSetup) -> CarrierWire:
        return PlivoWire(setup, self.auth_id)
