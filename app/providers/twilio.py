"""Twilio: TwiML `<Connect><Stream>`, X-Twilio-Signature, and the Media Streams framing."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from twilio.request_validator import RequestValidator, get_signature_algorithm
from twilio.twiml.voice_response import Connect, Dial, VoiceResponse

from app.media.formats import PCMU_8K
from app.providers.base import (
    CallbackFields,
    FrameError,
    OutboundRules,
    StreamFraming,
    StreamStart,
    WebhookProvider,
    WebhookRequest,
    text_field,
)
from app.providers.call_lists import dials_since
from app.providers.control import (
    TWILIO_CALL_STATUSES,
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
    optional_object,
    require_object,
    string_map,
)
from app.providers.rest import ProviderApiError, ProviderHttp, RetryPolicy, json_body
from app.schemas.telephony import TelephonyConfigBase, TwilioConfig

SIGNATURE_HEADER = "x-twilio-signature"
SIGNATURE_SETTINGS_HEADER = "x-twilio-webhooks-signature-settings"
API_BASE_URL = "https://api.twilio.com"
#: Error codes meaning the call is already over: not found, and "not in-progress" for TwiML updates.
CALL_GONE_CODES = frozenset({"20404"})
CALL_NOT_IN_PROGRESS = "21220"


class TwilioFraming(JsonStreamFraming):
    """Twilio Media Streams (bidirectional): μ-law 8 kHz in JSON text frames."""

    rules = OutboundRules(clear_returns_marks=True)

    def __init__(self) -> None:
        self.stream_sid = ""

    def decode_start(self, msg: dict[str, Any]) -> StreamStart:
        start = require_object(msg, "start", "start message")
        sid = start.get("streamSid") or msg.get("streamSid")
        if not isinstance(sid, str) or not sid:
            raise FrameError("start has no streamSid")
        media_format = optional_object(start, "mediaFormat")
        encoding = str(media_format.get("encoding", "audio/x-mulaw")).lower()
        if encoding != "audio/x-mulaw" or media_format.get("sampleRate", 8000) not in (8000, "8000"):
            raise FrameError(f"unsupported Twilio media format {media_format}")
        self.stream_sid = sid
        self.outbound = OutboundMessages.media_mark_clear("streamSid", sid)
        return StreamStart(
            stream_id=sid,
            provider_call_id=text_field(start, "callSid"),
            audio_format=PCMU_8K,
            custom_parameters=string_map(start.get("customParameters")),
        )


#: Twilio's webhook field names, which Telnyx's TeXML copies.
TWILIO_CALLBACK_FIELDS = CallbackFields(
    call_id="CallSid",
    status="CallStatus",
    statuses=TWILIO_CALL_STATUSES,
    duration="CallDuration",
    status_details=("ErrorMessage", "SipResponseCode"),
)


class TwilioProvider(WebhookProvider[TwilioConfig]):
    """Twilio's webhook side, using the official SDK's validator and TwiML builder."""

    name = "twilio"
    config_model = TwilioConfig
    signature_headers = (SIGNATURE_HEADER,)
    fields = TWILIO_CALLBACK_FIELDS
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

    def call_control(
        self, config: TwilioConfig, client: httpx.AsyncClient, policy: RetryPolicy
    ) -> CallControl:
        return TwilioCallControl(config, client, policy)

    def transfer_xml(self, target: str) -> str:
        return dial_twiml(target)

    def hangup_xml(self) -> str:
        return hangup_twiml()


def hangup_twiml() -> str:
    """`<Response><Hangup/>` (TwiML; TeXML reads it the same)."""
    response = VoiceResponse()
    response.hangup()
    return str(response)


def dial_twiml(target: str) -> str:
    """`<Response><Dial>` to a number, or `<Dial><Sip>` to a SIP URI."""
    response = VoiceResponse()
    dial = Dial()
    if target.startswith(("sip:", "sips:")):
        dial.sip(target)
    else:
        dial.number(target)
    response.append(dial)
    return str(response)


def twilio_error(response: httpx.Response) -> tuple[str | None, str]:
    """Twilio's REST errors: `{"code": 20404, "message": ..., "more_info": ..., "status": 404}`."""
    body = json_body(response)
    if isinstance(body, dict):
        code = body.get("code")
        return (str(code) if code is not None else None), str(body.get("message") or response.reason_phrase)
    return None, response.text[:200] or response.reason_phrase


class TwilioCallControl(CallControl):
    """Twilio's Calls resource (2010-04-01 API) with Basic auth: create, update Status / Twiml.

    Twilio has no DTMF API (`out_of_band_dtmf` stays False): callbridge plays tones on the stream.
    """

    provider = "twilio"
    reserved_params = frozenset(
        {"To", "From", "Twiml", "Url", "StatusCallback", "StatusCallbackMethod", "StatusCallbackEvent"}
    )
    param_name = staticmethod(pascal_case)

    def __init__(self, config: TwilioConfig, client: httpx.AsyncClient, policy: RetryPolicy) -> None:
        base = str(config.api_base_url or API_BASE_URL)
        self.calls_path = f"/2010-04-01/Accounts/{config.account_sid}/Calls"
        self.http = ProviderHttp(
            "twilio",
            client,
            base,
            auth=httpx.BasicAuth(config.account_sid, config.auth_token),
            parse_error=twilio_error,
            policy=policy,
        )

    async def dial(self, request: DialRequest) -> Dialled:
        form = {
            "To": request.to,
            "From": request.from_,
            "Twiml": request.stream_xml,
            "StatusCallback": request.status_url,
            "StatusCallbackMethod": "POST",
            "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"],
            "Timeout": str(request.ring_timeout_s),
            "TimeLimit": str(request.time_limit_s),
            **self.additional_params(request.additional_params),
        }
        answer = await self.http.send_for_object(
            "create call", "POST", f"{self.calls_path}.json", form=form, repeatable=False
        )
        sid = answer.get("sid")
        return Dialled(sid if isinstance(sid, str) and sid else None)

    async def find_dialled(self, to: str, from_: str, since: datetime) -> DialLookup:
        """The Calls list filtered by To, From and `Status=queued` (a queued call has no start time yet),
        then by To, From and `StartTime>=` the day of `since` (Twilio filters by UTC date); kept: those
        created at or after `since`. In that order, a call leaving the queue between the two is not missed."""
        path = f"{self.calls_path}.json"
        sids = await dials_since(self.http, path, {"To": to, "From": from_, "Status": "queued"}, since)
        started = {"To": to, "From": from_, "StartTime>": since.astimezone(UTC).date().isoformat()}
        sids += await dials_since(self.http, path, started, since)
        return DialLookup(tuple(dict.fromkeys(sids)))

    async def hang_up(self, leg: ProviderLeg) -> None:
        # `completed` ends the call in any state; `canceled` would leave an answered call up.
        await self._update(leg, "hang up", {"Status": "completed"}, gone_ok=True)

    async def transfer(self, leg: ProviderLeg, target: str, transfer_url: str) -> None:
        # New TwiML ends <Connect><Stream> (Twilio sends `stop`) and dials the target. Not repeated: a second
        # update would dial again.
        await self._update(leg, "transfer", {"Twiml": dial_twiml(target)}, gone_ok=False, repeatable=False)

    async def _update(
        self, leg: ProviderLeg, action: str, form: dict[str, Any], *, gone_ok: bool, repeatable: bool = True
    ) -> None:
        if leg.provider_call_id is None:
            raise ProviderApiError("twilio", action, None, None, "the call has no Twilio CallSid yet")
        path = f"{self.calls_path}/{leg.provider_call_id}.json"
        try:
            await self.http.send(action, "POST", path, form=form, repeatable=repeatable)
        except ProviderApiError as exc:
            if not (gone_ok and exc.code in CALL_GONE_CODES | {CALL_NOT_IN_PROGRESS}):
                raise
