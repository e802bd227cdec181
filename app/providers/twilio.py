"""Twilio: TwiML `<Connect><Stream>`, X-Twilio-Signature, and the Media Streams framing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twilio.request_validator import RequestValidator, get_signature_algorithm
from twilio.twiml.voice_response import Connect, VoiceResponse

from app.media.formats import PCMU_8K
from app.providers.base import (
    FrameError,
    StreamFraming,
    StreamStart,
    WebhookProvider,
    WebhookRequest,
)
from app.providers.frames import (
    JsonStreamFraming,
    OutboundMessages,
    require,
    string_map,
)
from app.schemas.telephony import TelephonyConfigBase, TwilioConfig

SIGNATURE_HEADER = "x-twilio-signature"
SIGNATURE_SETTINGS_HEADER = "x-twilio-webhooks-signature-settings"


class TwilioFraming(JsonStreamFraming):
    """Twilio Media Streams (bidirectional): μ-law 8 kHz in JSON text frames."""

    clear_returns_marks = True

    def __init__(self) -> None:
        self.stream_sid = ""

    def decode_start(self, msg: dict[str, Any]) -> StreamStart:
        start = require(msg, "start", "start message")
        sid = start.get("streamSid") or msg.get("streamSid")
        if not isinstance(sid, str) or not sid:
            raise FrameError("start has no streamSid")
        media_format = start.get("mediaFormat") or {}
        encoding = str(media_format.get("encoding", "audio/x-mulaw")).lower()
        if encoding != "audio/x-mulaw" or int(media_format.get("sampleRate", 8000)) != 8000:
            raise FrameError(f"unsupported Twilio media format {media_format}")
        self.stream_sid = sid
        self.outbound = OutboundMessages.media_mark_clear("streamSid", sid)
        return StreamStart(
            stream_id=sid,
            provider_call_id=start.get("callSid"),
            audio_format=PCMU_8K,
            custom_parameters=string_map(start.get("customParameters")),
        )


class TwilioProvider(WebhookProvider[TwilioConfig]):
    """Twilio's webhook side, using the official SDK's validator and TwiML builder."""

    name = "twilio"
    config_model = TwilioConfig
    signature_headers = (SIGNATURE_HEADER,)
    signs_streams = True

    def verify(self, request: WebhookRequest, config: TwilioConfig) -> bool:
        signature = request.headers.get(SIGNATURE_HEADER)
        token = config.auth_token
        if not signature:
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

    def connect_xml(self, join_url: str, call_id: str, config: TwilioConfig) -> str:
        response = VoiceResponse()
        connect = Connect()
        stream = connect.stream(url=join_url)
        # The credential is in the URL path (Twilio drops query strings); the parameter is informational.
        stream.parameter(name="callId", value=call_id)
        response.append(connect)
        return str(response)

    def verify_stream(self, url: str, headers: Mapping[str, str], config: TelephonyConfigBase) -> bool:
        signature = headers.get(SIGNATURE_HEADER)
        if not signature or not isinstance(config, TwilioConfig):
            return False
        algorithm = get_signature_algorithm(headers.get(SIGNATURE_SETTINGS_HEADER))
        return bool(RequestValidator(config.auth_token).validate(url, {}, signature, algorithm=algorithm))

    def new_framing(self, options: Mapping[str, Any]) -> StreamFraming:
        return TwilioFraming()
