"""A fake Telnyx: Ed25519-signed TeXML webhook → `<Connect><Stream bidirectionalMode="rtp">` → media.

Follows Telnyx's media-streaming protocol: `stream_id` at the top level, string sequence numbers, codec
names in `media_format`, L16 in network byte order; outbound `media` chunks of 20 ms to 30 s, `mark`
echoed when the audio before it played, `clear` returning the queued marks.
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding as KeyEncoding
from cryptography.hazmat.primitives.serialization import PublicFormat

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

CODECS = {"PCMU": Encoding.PCMU, "PCMA": Encoding.PCMA, "L16": Encoding.L16}
RATES = {"PCMU": {8000}, "PCMA": {8000}, "L16": {8000, 16000, 24000}}
MAX_CHUNK_MS = 30_000


class TelnyxWire(CarrierWire):
    provider = "telnyx"

    def __init__(self, setup: StreamSetup, account_id: str, legacy_encoding_names: bool = False) -> None:
        super().__init__(setup, account_id)
        self.legacy_encoding_names = legacy_encoding_names

    def new_stream_id(self) -> str:
        return str(uuid.uuid4()).upper()

    def _encoding_name(self) -> str:
        fmt = self.audio_format
        if self.legacy_encoding_names:  # older Telnyx docs spell codecs as MIME types
            return {Encoding.PCMU: "audio/x-mulaw", Encoding.PCMA: "audio/x-alaw"}.get(
                fmt.encoding, "audio/x-l16"
            )
        return fmt.encoding.value.upper()

    def opening(self) -> list[dict[str, Any]]:
        start = {
            "user_id": str(uuid.uuid4()),
            "call_control_id": self.setup.provider_call_id,
            "call_session_id": str(uuid.uuid4()),
            "from": self.setup.parameters.get("From", ""),
            "to": self.setup.parameters.get("To", ""),
            "tags": [],
            "custom_parameters": {},
            "media_format": {
                "encoding": self._encoding_name(),
                "sample_rate": self.audio_format.sample_rate,
                "channels": 1,
            },
        }
        return [{"event": "connected", "version": "1.0.0"}, self.numbered("start", start=start)]

    def dtmf(self, digit: str) -> dict[str, Any]:
        return self.numbered("dtmf", occurred_at=datetime.now(UTC).isoformat(), dtmf={"digit": digit})

    def closing(self) -> dict[str, Any]:
        return self.numbered("stop", stop={"user_id": "", "call_control_id": self.setup.provider_call_id})

    def parse(self, message: dict[str, Any]) -> Outbound:
        event = message.get("event")
        if event == "media":
            payload = decode_strict_base64(message["media"]["payload"])
            fmt = self.audio_format
            check(
                fmt.bytes_for_ms(20) <= len(payload) <= fmt.bytes_for_ms(MAX_CHUNK_MS),
                f"Telnyx takes media chunks of 20 ms to 30 s; got {fmt.duration_ms(len(payload)):.1f} ms",
            )
            check(len(payload) % fmt.bytes_per_sample == 0, "chunk is not a whole number of samples")
            return OutAudio(payload)
        if event == "mark":
            return OutMark(str(message["mark"]["name"]))
        if event == "clear":
            return OutClear()
        raise ProtocolViolation(f"Telnyx would reject event {event!r}: {message}")


def parse_texml_stream(xml: str) -> tuple[str, AudioFormat]:
    """(stream URL, audio format both ways) from TeXML `<Connect><Stream>`, checked as Telnyx would."""
    root = ET.fromstring(xml)
    stream = root.find("./Connect/Stream")
    check(stream is not None and bool(stream.get("url")), f"TeXML has no <Connect><Stream url>: {xml}")
    assert stream is not None
    check(
        stream.get("bidirectionalMode") == "rtp",
        'without bidirectionalMode="rtp" Telnyx expects MP3 files, one per second: the caller hears nothing',
    )
    codec = stream.get("bidirectionalCodec", "PCMU")
    check(codec in CODECS, f"unknown bidirectionalCodec {codec!r}")
    check(stream.get("codec", "default") == codec, "codec differs from bidirectionalCodec")
    rate = int(stream.get("bidirectionalSamplingRate", "8000"))
    check(rate in RATES[codec], f"{codec} at {rate} Hz is not offered")
    byte_order = "big" if CODECS[codec] is Encoding.L16 else "little"  # RTP's network order
    return stream.get("url", ""), AudioFormat(CODECS[codec], rate, byte_order)


class FakeTelnyx(FakeCarrier):
    """A Telnyx account with a TeXML application pointing at callbridge; it signs with `signing_key`."""

    provider = "telnyx"

    def __init__(
        self,
        base_url: str,
        signing_key: Ed25519PrivateKey | None = None,
        account_sid: str = "ACtelnyx",
        connection_id: str = "1684641123236054244",
    ) -> None:
        super().__init__(base_url)
        self.signing_key = signing_key or Ed25519PrivateKey.generate()
        self.account_sid = account_sid
        self.connection_id = connection_id
        self.legacy_encoding_names = False

    @property
    def public_key(self) -> str:
        """The base64 public key to import as the telephony config's `publicKey`."""
        raw = self.signing_key.public_key().public_bytes(KeyEncoding.Raw, PublicFormat.Raw)
        return base64.b64encode(raw).decode()

    def new_call_id(self) -> str:
        return "v3:" + secrets.token_urlsafe(24)

    def incoming_params(self, script: CallScript, provider_call_id: str) -> dict[str, str]:
        return {
            "AccountSid": self.account_sid,
            "CallSid": provider_call_id,
            "CallSidLegacy": provider_call_id,
            "CallStatus": "ringing",
            "CallbackSource": "call-initiated",
            "ConnectionId": self.connection_id,
            "Direction": "inbound",
            "From": script.from_number,
            "To": script.to_number,
            "CallerId": script.from_number,
            "Timestamp": datetime.now(UTC).isoformat(),
        }

    def signature_headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """Telnyx's signature: Ed25519 over `"{timestamp}|{body}"` (now, unless told otherwise)."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self.signing_key.sign(f"{stamp}|".encode() + body)
        return {"telnyx-signature-ed25519": base64.b64encode(signature).decode(), "telnyx-timestamp": stamp}

    def sign(self, url: str, body: bytes, params: dict[str, str]) -> dict[str, str]:
        return self.signature_headers(body)

    def parse_xml(self, xml: str, provider_call_id: str) -> StreamSetup:
        url, fmt = parse_texml_stream(xml)
        return StreamSetup(url, fmt, provider_call_id)

    def wire(self, setup: StreamSetup) -> CarrierWire:
        return TelnyxWire(setup, self.account_sid, self.legacy_encoding_names)
