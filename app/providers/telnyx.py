"""Telnyx: TeXML `<Connect><Stream bidirectionalMode="rtp">`, Ed25519 webhook signatures, media streaming.

TeXML is Twilio-compatible markup, so the TwiML builder of Twilio's SDK writes it (Telnyx publishes no
Python TeXML builder). The signature check follows telnyx-python's `verify_webhook_signature` exactly (the
tests hold the two side by side) but runs on `cryptography`, so the server does not import the whole
generated Telnyx client (~2 s) to check one signature.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from twilio.twiml.voice_response import Connect, VoiceResponse

from app.media.formats import ByteOrder
from app.providers.base import (
    FrameError,
    OutboundRules,
    StreamAudio,
    StreamEvent,
    StreamFraming,
    StreamProviderError,
    StreamStart,
    WebhookProvider,
    WebhookRequest,
    text_field,
)
from app.providers.call_lists import dials_since
from app.providers.control import (
    CallControl,
    Dialled,
    DialLookup,
    DialRequest,
    ProviderLeg,
    pascal_case,
)
from app.providers.frames import (
    JsonStreamFraming,
    OutboundMessages,
    byte_order_option,
    optional_object,
    require_object,
    sequence_number,
    string_map,
    wire_format,
)
from app.providers.reordering import AudioReorderer
from app.providers.rest import ProviderApiError, ProviderHttp, RetryPolicy, json_body
from app.providers.twilio import TWILIO_CALLBACK_FIELDS, dial_twiml, hangup_twiml
from app.schemas.telephony import TelnyxConfig

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
#: Webhooks signed further than this from now are refused (replay protection; the SDK's tolerance).
TIMESTAMP_TOLERANCE_S = 300

#: TeXML codec name → the sampling rate callbridge asks for with it.
CODEC_RATES = {"L16": 16000, "PCMU": 8000, "PCMA": 8000}

OUTBOUND = OutboundMessages.media_mark_clear()  # no stream id on outbound frames

API_BASE_URL = "https://api.telnyx.com"
#: Call Control's "call has already ended" (a command on a call that hung up).
CALL_ENDED_CODE = "90018"
#: `send_dtmf`'s tone length bounds (ms).
DTMF_DURATION_RANGE = (100, 500)


class TelnyxFraming(JsonStreamFraming):
    """Telnyx media streaming in `rtp` bidirectional mode: PCMU/PCMA 8 kHz or L16, reordered by sequence."""

    # Telnyx returns queued marks on clear, and refuses outbound chunks under 20 ms.
    rules = OutboundRules(pad_partial_chunks=True, clear_returns_marks=True)

    def __init__(self, l16_byte_order: ByteOrder = "big") -> None:
        self.l16_byte_order = l16_byte_order
        self.stream_id = ""
        self.reorderer = AudioReorderer()
        # No stream_id on outbound frames: the messages are known before the start.
        self.outbound = OUTBOUND

    def decode_event(self, event: str, msg: dict[str, Any]) -> StreamEvent | None:
        self.reorderer.other(sequence_number(msg, "sequence_number"))
        if event == "error":
            return _error(msg)
        return super().decode_event(event, msg)

    def decode_audio(self, payload: bytes, msg: dict[str, Any]) -> StreamEvent | None:
        ready = self.reorderer.media(sequence_number(msg, "sequence_number"), payload)
        return StreamAudio(ready) if ready is not None else None

    def decode_start(self, msg: dict[str, Any]) -> StreamStart:
        start = require_object(msg, "start", "start message")
        stream_id = msg.get("stream_id") or start.get("stream_id")
        if not isinstance(stream_id, str) or not stream_id:
            raise FrameError("start has no stream_id")
        media_format = optional_object(start, "media_format")
        audio_format = wire_format(
            media_format.get("encoding", "PCMU"), media_format.get("sample_rate", 8000), self.l16_byte_order
        )
        self.stream_id = stream_id
        self.reorderer.start(sequence_number(msg, "sequence_number"))
        return StreamStart(
            stream_id=stream_id,
            provider_call_id=text_field(start, "call_control_id"),
            audio_format=audio_format,
            custom_parameters=string_map(start.get("custom_parameters")),
        )


def _error(msg: dict[str, Any]) -> StreamProviderError:
    """An `error` frame; details are under `error` (docs) or `payload` (some newer senders)."""
    details = msg.get("error") or msg.get("payload") or {}
    if not isinstance(details, dict):
        details = {"detail": str(details)}
    code = str(details.get("code", "unknown"))
    text = " ".join(str(details[k]) for k in ("title", "detail") if details.get(k)) or "stream error"
    return StreamProviderError(code, text)


def verify_ed25519(body: bytes, headers: Mapping[str, str], public_key: str, now: float) -> bool:
    """Telnyx's webhook check: Ed25519 over `"{timestamp}|{body}"`, timestamp within 300 s of `now`."""
    signature = headers.get(SIGNATURE_HEADER)
    timestamp = headers.get(TIMESTAMP_HEADER)
    if not signature or not timestamp:
        return False
    try:
        if abs(now - int(timestamp)) > TIMESTAMP_TOLERANCE_S:
            return False
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key))
        signature_bytes = base64.b64decode(signature)
        if len(signature_bytes) != 64:
            return False
        key.verify(signature_bytes, f"{timestamp}|".encode() + body)
    except (ValueError, binascii.Error, InvalidSignature):
        return False
    return True


class TelnyxProvider(WebhookProvider[TelnyxConfig]):
    """Telnyx's TeXML webhook side."""

    name = "telnyx"
    config_model = TelnyxConfig
    signature_headers = (SIGNATURE_HEADER, TIMESTAMP_HEADER)
    fields = TWILIO_CALLBACK_FIELDS  # TeXML callbacks copy Twilio's

    def verify(self, request: WebhookRequest, config: TelnyxConfig) -> bool:
        return verify_ed25519(request.body, request.headers, config.public_key, time.time())

    def connect_xml(self, join_url: str, call_id: str, config: TelnyxConfig) -> str:
        codec = config.stream_codec
        response = VoiceResponse()
        connect = Connect()
        # `codec` (what Telnyx sends) always equals `bidirectionalCodec` (what it plays).
        connect.stream(
            url=join_url,
            bidirectionalMode="rtp",
            codec=codec,
            bidirectionalCodec=codec,
            bidirectionalSamplingRate=str(CODEC_RATES[codec]),
        )
        response.append(connect)
        return str(response)

    def stream_options(self, config: TelnyxConfig) -> dict[str, Any]:
        return {"l16ByteOrder": config.l16_byte_order}

    def transfer_xml(self, target: str) -> str:
        # Transfers go through Call Control; TeXML's <Dial> (<Number> or <Sip>) serves a request all the same.
        return dial_twiml(target)

    def hangup_xml(self) -> str:
        return hangup_twiml()

    def new_framing(self, options: Mapping[str, Any]) -> StreamFraming:
        return TelnyxFraming(byte_order_option(options, "l16ByteOrder", "big"))

    def call_control(
        self, config: TelnyxConfig, client: httpx.AsyncClient, policy: RetryPolicy
    ) -> CallControl:
        return TelnyxCallControl(config, client, policy)

    def dial_problem(self, config: TelnyxConfig) -> str | None:
        if not config.application_sid:
            return (
                "telnyx outgoing calls need applicationSid in the telnyx telephony config "
                "(a TeXML application whose outbound voice profile allows the destination)"
            )
        return None


def telnyx_error(response: httpx.Response) -> tuple[str | None, str]:
    """Telnyx's errors: `{"errors": [{"code": "90018", "title": ..., "detail": ...}]}`."""
    body = json_body(response)
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        text = " - ".join(str(first[k]) for k in ("title", "detail") if first.get(k))
        code = first.get("code")
        return (str(code) if code is not None else None), text or response.reason_phrase
    return None, response.text[:200] or response.reason_phrase


class TelnyxCallControl(CallControl):
    """Telnyx: dial through the TeXML Calls API (so the call runs the same TeXML as incoming calls), then
    control the call with Call Control commands on its `call_control_id` (TeXML's CallSid).

    The dial uses the application-scoped `POST /v2/texml/calls/{application_id}`: its answer documents the new
    call's `call_sid`, which the account-scoped `/texml/Accounts/{sid}/Calls` answer does not (a call could
    then not be cancelled before its first status callback).

    Every command carries a `command_id`, which Telnyx uses to drop duplicates, so retries are safe.
    """

    provider = "telnyx"
    out_of_band_dtmf = True
    reserved_params = frozenset(
        {
            "ApplicationSid",
            "To",
            "From",
            "Url",
            "UrlMethod",
            "Texml",
            "StatusCallback",
            "StatusCallbackMethod",
            "StatusCallbackEvent",
        }
    )
    param_name = staticmethod(pascal_case)

    def __init__(self, config: TelnyxConfig, client: httpx.AsyncClient, policy: RetryPolicy) -> None:
        self.config = config
        self.http = ProviderHttp(
            "telnyx",
            client,
            str(config.api_base_url or API_BASE_URL),
            headers={"Authorization": f"Bearer {config.api_key}"},
            parse_error=telnyx_error,
            policy=policy,
        )

    async def dial(self, request: DialRequest) -> Dialled:
        body = {
            "To": request.to,
            "From": request.from_,
            "Url": request.answer_url,
            "UrlMethod": "POST",
            "StatusCallback": request.status_url,
            "StatusCallbackMethod": "POST",
            "StatusCallbackEvent": "initiated ringing answered completed",
            "Timeout": request.ring_timeout_s,
            "TimeLimit": request.time_limit_s,
            **self.additional_params(request.additional_params),
        }
        path = f"/v2/texml/calls/{self.config.application_sid}"
        answer = await self.http.send_for_object("create call", "POST", path, json=body, repeatable=False)
        call_sid = answer.get("call_sid")
        return Dialled(call_sid if isinstance(call_sid, str) and call_sid else None)

    async def find_dialled(self, to: str, from_: str, since: datetime) -> DialLookup:
        """The TeXML Calls list of the account (`accountSid`), filtered by To and From, newest first; kept:
        those created at or after `since`. Its date filters take whole days and its Status filter no live
        states, so neither is used. Telnyx calls the list eventually consistent: it is asked a lease after
        the dial, not at once."""
        if not self.config.account_sid:
            raise ProviderApiError(
                "telnyx", "list calls", None, None, "the Telnyx config has no accountSid to list calls of"
            )
        path = f"/v2/texml/Accounts/{self.config.account_sid}/Calls"
        return DialLookup(tuple(await dials_since(self.http, path, {"To": to, "From": from_}, since)))

    async def hang_up(self, leg: ProviderLeg) -> None:
        try:
            await self._command(leg, "hangup", {})
        except ProviderApiError as exc:
            if exc.code != CALL_ENDED_CODE and exc.status != 404:
                raise

    async def transfer(self, leg: ProviderLeg, target: str, transfer_url: str) -> None:
        await self._command(leg, "transfer", {"to": target})

    async def send_dtmf(self, leg: ProviderLeg, digits: str, tone_ms: int = 250) -> None:
        low, high = DTMF_DURATION_RANGE
        await self._command(
            leg, "send_dtmf", {"digits": digits, "duration_millis": min(max(tone_ms, low), high)}
        )

    async def _command(self, leg: ProviderLeg, action: str, body: dict[str, Any]) -> None:
        if leg.provider_call_id is None:
            raise ProviderApiError("telnyx", action, None, None, "the call has no call_control_id yet")
        path = f"/v2/calls/{leg.provider_call_id}/actions/{action}"
        await self.http.send(action, "POST", path, json={**body, "command_id": str(uuid.uuid4())})
