"""A fake Exotel Voicebot applet: connects to a joinUrl (with `?sample-rate=`) and speaks AgentStream.

Follows Exotel's protocol page: `stream_sid` (or, like Exotel's own bridge, `streamSid`), string numbers,
raw 16-bit little-endian PCM at 8/16/24 kHz arriving every 100 ms, `stop.reason`; outbound `media`
chunks must be multiples of 320 bytes, at least 3,200 bytes and at most 100 KB.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from app.media.formats import AudioFormat, Encoding
from app.simulator.carrier import (
    CallReport,
    CallScript,
    CarrierWire,
    OutAudio,
    Outbound,
    OutClear,
    OutMark,
    Progress,
    ProtocolViolation,
    StreamSetup,
    check,
    decode_strict_base64,
    open_stream,
)

RATES = (8000, 16000, 24000)
CHUNK_MULTIPLE = 320
MIN_CHUNK = 3200
MAX_CHUNK = 100_000


class ExotelWire(CarrierWire):
    provider = "exotel"
    inbound_frame_ms = 100
    clear_returns_marks = False
    media_track = None

    def __init__(self, setup: StreamSetup, account_id: str, camel_case_sid: bool = False) -> None:
        super().__init__(setup, account_id)
        self.stream_key = "streamSid" if camel_case_sid else "stream_sid"

    def new_stream_id(self) -> str:
        return secrets.token_hex(16)

    def opening(self) -> list[dict[str, Any]]:
        start = {
            self.stream_key: self.stream_id,
            "call_sid": self.setup.provider_call_id,
            "account_sid": self.account_id,
            "from": "09999999999",
            "to": "08888888888",
            "custom_parameters": self.setup.parameters,
            "media_format": {
                "encoding": "audio/x-raw",
                "sample_rate": str(self.audio_format.sample_rate),
                "bit_rate": "16",
            },
        }
        return [{"event": "connected"}, self.numbered("start", start=start)]

    def dtmf(self, digit: str) -> dict[str, Any]:
        return self.numbered("dtmf", dtmf={"digit": digit, "duration": "100"})

    def closing(self) -> dict[str, Any]:
        stop = {
            "call_sid": self.setup.provider_call_id,
            "account_sid": self.account_id,
            "reason": "callended",
        }
        return self.numbered("stop", stop=stop)

    def parse(self, message: dict[str, Any]) -> Outbound:
        sid = message.get("stream_sid", message.get("streamSid"))
        check(sid == self.stream_id, f"message for another stream: {message}")
        event = message.get("event")
        if event == "media":
            payload = decode_strict_base64(message["media"]["payload"])
            check(
                len(payload) % CHUNK_MULTIPLE == 0 and MIN_CHUNK <= len(payload) <= MAX_CHUNK,
                f"Exotel takes chunks of 3,200 B to 100 KB in multiples of 320 B; got {len(payload)} B",
            )
            return OutAudio(payload)
        if event == "mark":
            return OutMark(str(message["mark"]["name"]))
        if event == "clear":
            return OutClear()
        raise ProtocolViolation(f"Exotel would reject event {event!r}: {message}")


def with_sample_rate(url: str, sample_rate: int) -> str:
    """The Voicebot URL asking for `sample_rate` (`?sample-rate=`; 8 kHz is Exotel's default)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "sample-rate"]
    if sample_rate != 8000:
        query.append(("sample-rate", str(sample_rate)))
    return urlunsplit(parts._replace(query=urlencode(query)))


class FakeExotel:
    """An Exotel flow whose Voicebot applet points at a callbridge joinUrl (Exotel has no webhook to sign)."""

    provider = "exotel"

    def __init__(self, account_sid: str = "exotelaccount1", camel_case_sid: bool = False) -> None:
        self.account_sid = account_sid
        self.camel_case_sid = camel_case_sid

    def stream_setup(self, join_url: str, sample_rate: int = 8000, **custom: str) -> StreamSetup:
        check(sample_rate in RATES, f"Exotel streams at {RATES}, not {sample_rate}")
        fmt = AudioFormat(Encoding.L16, sample_rate, "little")
        return StreamSetup(with_sample_rate(join_url, sample_rate), fmt, secrets.token_hex(16), dict(custom))

    async def call(
        self,
        join_url: str,
        script: CallScript,
        on_progress: Callable[[Progress], None] | None = None,
        *,
        sample_rate: int = 8000,
    ) -> CallReport:
        """Run one call through the Voicebot applet configured with `join_url`."""
        return await self.run_stream(self.stream_setup(join_url, sample_rate), script, on_progress)

    async def run_stream(
        self,
        setup: StreamSetup,
        script: CallScript,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> CallReport:
        wire = ExotelWire(setup, self.account_sid, self.camel_case_sid)
        return await open_stream(setup, wire, script, on_progress)


__all__ = ["ExotelWire", "FakeExotel", "ProtocolViolation", "with_sample_rate"]
