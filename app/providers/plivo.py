"""Plivo: `<Stream bidirectional keepCallAlive>` XML, V3 signatures, and the Audio Stream framing.

The XML comes from plivo-python's own `StreamElement` and the signature check is its `validate_v3_signature`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from plivo import plivoxml
from plivo.utils.signature_v3 import validate_v3_signature

from app.media.formats import AudioFormat, ByteOrder, Encoding
from app.providers.base import (
    FrameError,
    StreamEvent,
    StreamFraming,
    StreamMark,
    StreamStart,
    WebhookProvider,
    WebhookRequest,
    form_fields,
)
from app.providers.frames import (
    HOLE,
    JsonStreamFraming,
    OutboundMessages,
    byte_order_option,
    require,
    wire_format,
)
from app.schemas.telephony import PlivoConfig

SIGNATURE_HEADER = "x-plivo-signature-v3"
NONCE_HEADER = "x-plivo-signature-v3-nonce"

_EXTRA_HEADER_SEPARATORS = re.compile(r"[,;]")


def parse_extra_headers(value: Any) -> dict[str, str]:
    """`extra_headers` (`k=v;k2=v2`, or `k=v,k2=v2` as written in the XML) as a dict."""
    if not isinstance(value, str):
        return {}
    pairs = (item.partition("=") for item in _EXTRA_HEADER_SEPARATORS.split(value))
    return {k.strip(): v.strip() for k, sep, v in pairs if sep and k.strip()}


def content_type(audio_format: AudioFormat) -> str:
    """Plivo's name for a stream format (`audio/x-l16` or `audio/x-mulaw`)."""
    return "audio/x-mulaw" if audio_format.encoding is Encoding.PCMU else "audio/x-l16"


class PlivoFraming(JsonStreamFraming):
    """Plivo Audio Streams: μ-law 8 kHz or L16 8/16 kHz; `checkpoint` → `playedStream`; no `stop` event."""

    clear_returns_marks = False  # Plivo answers clearAudio with clearedAudio; checkpoints are dropped

    def __init__(self, l16_byte_order: ByteOrder = "little") -> None:
        self.l16_byte_order = l16_byte_order
        self.stream_id = ""

    def decode_event(self, event: str, msg: dict[str, Any]) -> StreamEvent | None:
        if event == "playedStream":  # the answer to a checkpoint
            return StreamMark(str(require(msg, "name", "playedStream")))
        return super().decode_event(event, msg)  # media, dtmf, start; a stray `stop` is tolerated

    def decode_start(self, msg: dict[str, Any]) -> StreamStart:
        start = require(msg, "start", "start message")
        stream_id = start.get("streamId") or msg.get("streamId")
        if not isinstance(stream_id, str) or not stream_id:
            raise FrameError("start has no streamId")
        media_format = start.get("mediaFormat") or {}
        audio_format = wire_format(
            media_format.get("encoding", "audio/x-l16"),
            media_format.get("sampleRate", 8000),
            self.l16_byte_order,
        )
        self.stream_id = stream_id
        self.outbound = OutboundMessages.build(
            media={
                "event": "playAudio",
                "media": {
                    "contentType": content_type(audio_format),
                    "sampleRate": audio_format.sample_rate,
                    "payload": HOLE,
                },
            },
            mark={"event": "checkpoint", "streamId": stream_id, "name": HOLE},
            clear={"event": "clearAudio", "streamId": stream_id},
        )
        return StreamStart(
            stream_id=stream_id,
            provider_call_id=start.get("callId"),
            audio_format=audio_format,
            custom_parameters=parse_extra_headers(msg.get("extra_headers")),
        )


class PlivoProvider(WebhookProvider[PlivoConfig]):
    """Plivo's answer-URL side, using plivo-python's validator and XML builder."""

    name = "plivo"
    config_model = PlivoConfig
    signature_headers = (SIGNATURE_HEADER, NONCE_HEADER)
    call_id_field = "CallUUID"

    def verify(self, request: WebhookRequest, config: PlivoConfig) -> bool:
        signature = request.headers.get(SIGNATURE_HEADER)
        nonce = request.headers.get(NONCE_HEADER)
        method = request.method.upper()
        if not signature or not nonce or method not in ("GET", "POST"):
            return False
        params = form_fields(request.form) if method == "POST" else {}
        return bool(validate_v3_signature(method, request.url, nonce, config.auth_token, signature, params))

    def connect_xml(self, join_url: str, call_id: str, config: PlivoConfig) -> str:
        response = plivoxml.ResponseElement()
        response.add(
            plivoxml.StreamElement(
                content=join_url,
                bidirectional=True,
                keepCallAlive=True,
                audioTrack="inbound",
                contentType=config.stream_content_type,
            )
        )
        return response.to_string(pretty=False)

    def stream_options(self, config: PlivoConfig) -> dict[str, Any]:
        return {"l16ByteOrder": config.l16_byte_order}

    def new_framing(self, options: Mapping[str, Any]) -> StreamFraming:
        return PlivoFraming(byte_order_option(options, "l16ByteOrder", "little"))
