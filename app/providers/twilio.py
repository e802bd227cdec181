"""Twilio: TwiML `<Connect><Stream>`, X-Twilio-Signature, and the Media Streams framing."""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from typing import Any

import orjson
from twilio.request_validator import RequestValidator, get_signature_algorithm
from twilio.twiml.voice_response import Connect, VoiceResponse

from app.media.formats import PCMU_8K
from app.providers.base import (
    DTMF_DIGITS,
    FrameError,
    IncomingCall,
    Provider,
    StreamAudio,
    StreamConnected,
    StreamDtmf,
    StreamEvent,
    StreamFraming,
    StreamIgnored,
    StreamMark,
    StreamStart,
    StreamStop,
    WebhookRequest,
)

SIGNATURE_HEADER = "x-twilio-signature"
SIGNATURE_SETTINGS_HEADER = "x-twilio-webhooks-signature-settings"


def _field(obj: Any, key: str, what: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise FrameError(f"{what} has no '{key}'")
    return obj[key]


def decode_base64(text: Any) -> bytes:
    """Strict base64 (a lenient decoder would silently turn garbage into noise)."""
    if not isinstance(text, str):
        raise FrameError("media payload is not a string")
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise FrameError(f"media payload is not valid base64: {exc}") from None


class TwilioFraming(StreamFraming):
    """Twilio Media Streams (bidirectional): μ-law 8 kHz in JSON text frames."""

    frame_ms = 20
    clear_returns_marks = True

    def __init__(self) -> None:
        self.stream_sid = ""
        self._prefixes: tuple[str, str, str] | None = None

    def decode(self, message: str | bytes) -> StreamEvent:
        try:
            msg = orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            raise FrameError(f"message is not JSON: {exc}") from None
        event = msg.get("event") if isinstance(msg, dict) else None
        if not isinstance(event, str):
            raise FrameError("message has no 'event'")
        if event == "media":
            media = _field(msg, "media", "media message")
            if media.get("track", "inbound") not in ("inbound", "inbound_track"):
                return StreamIgnored("media:" + str(media.get("track")))
            return StreamAudio(decode_base64(_field(media, "payload", "media")))
        if event == "mark":
            name = _field(_field(msg, "mark", "mark message"), "name", "mark")
            return StreamMark(str(name))
        if event == "dtmf":
            digit = str(_field(_field(msg, "dtmf", "dtmf message"), "digit", "dtmf"))
            if digit not in DTMF_DIGITS:
                raise FrameError(f"unknown DTMF digit {digit!r}")
            return StreamDtmf(digit)
        if event == "start":
            return self._start(_field(msg, "start", "start message"), msg)
        if event == "connected":
            return StreamConnected()
        if event == "stop":
            return StreamStop("stop")
        return StreamIgnored(event)

    def _start(self, start: Any, msg: dict[str, Any]) -> StreamStart:
        sid = start.get("streamSid") or msg.get("streamSid")
        if not isinstance(sid, str) or not sid:
            raise FrameError("start has no streamSid")
        media_format = start.get("mediaFormat") or {}
        encoding = str(media_format.get("encoding", "audio/x-mulaw")).lower()
        if encoding != "audio/x-mulaw" or int(media_format.get("sampleRate", 8000)) != 8000:
            raise FrameError(f"unsupported Twilio media format {media_format}")
        self.stream_sid = sid
        sid_json = orjson.dumps(sid).decode()
        self._prefixes = (
            '{"event":"media","streamSid":' + sid_json + ',"media":{"payload":"',
            '{"event":"mark","streamSid":' + sid_json + ',"mark":{"name":',
            '{"event":"clear","streamSid":' + sid_json + "}",
        )
        params = start.get("customParameters") or {}
        return StreamStart(
            stream_id=sid,
            provider_call_id=start.get("callSid"),
            audio_format=PCMU_8K,
            custom_parameters={str(k): str(v) for k, v in params.items()} if isinstance(params, dict) else {},
        )

    def _require_start(self) -> tuple[str, str, str]:
        if self._prefixes is None:
            raise RuntimeError("no outbound messages before the stream's start")
        return self._prefixes

    def encode_audio(self, payload: bytes) -> str:
        return self._require_start()[0] + binascii.b2a_base64(payload, newline=False).decode() + '"}}'

    def encode_mark(self, name: str) -> str:
        return self._require_start()[1] + orjson.dumps(name).decode() + "}}"

    def encode_clear(self) -> str:
        return self._require_start()[2]


class TwilioProvider(Provider):
    """Twilio's webhook side, using the official SDK's validator and TwiML builder."""

    name = "twilio"
    signature_header = SIGNATURE_HEADER

    def verify(self, request: WebhookRequest, credentials: Mapping[str, str]) -> bool:
        signature = request.headers.get(SIGNATURE_HEADER)
        token = credentials.get("authToken")
        if not signature or not token:
            return False
        algorithm = get_signature_algorithm(request.headers.get(SIGNATURE_SETTINGS_HEADER))
        validator = RequestValidator(token)
        content_type = request.headers.get("content-type", "")
        if "bodySHA256=" in request.url and not content_type.startswith("application/x-www-form-urlencoded"):
            return bool(
                validator.validate(
                    request.url, request.body.decode("utf-8", "replace"), signature, algorithm=algorithm
                )
            )
        params = request.form if request.form is not None else {}
        return bool(validator.validate(request.url, params, signature, algorithm=algorithm))

    def parse_incoming(self, request: WebhookRequest) -> IncomingCall:
        form = request.form
        fields: dict[str, Any] = {}
        if form is not None:
            for key in form:
                values = form.getlist(key)
                fields[key] = values[0] if len(values) == 1 else values
        return IncomingCall(
            provider_call_id=_text(fields.get("CallSid")),
            from_number=_text(fields.get("From")),
            to_number=_text(fields.get("To")),
            fields=fields,
        )

    def connect_xml(self, join_url: str, call_id: str) -> str:
        response = VoiceResponse()
        connect = Connect()
        stream = connect.stream(url=join_url)
        # The credential is in the URL path (Twilio drops query strings); the parameter is informational.
        stream.parameter(name="callId", value=call_id)
        response.append(connect)
        return str(response)

    def verify_stream(self, url: str, headers: Mapping[str, str], credentials: Mapping[str, str]) -> bool:
        signature = headers.get(SIGNATURE_HEADER)
        token = credentials.get("authToken")
        if not signature or not token:
            return False
        algorithm = get_signature_algorithm(headers.get(SIGNATURE_SETTINGS_HEADER))
        return bool(RequestValidator(token).validate(url, {}, signature, algorithm=algorithm))

    def new_framing(self, options: Mapping[str, Any]) -> StreamFraming:
        return TwilioFraming()


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
