"""Plivo: `<Stream bidirectional keepCallAlive>` XML, V3 signatures, and the Audio Stream framing.

The XML comes from plivo-python's own `StreamElement` and the signature check is its `validate_v3_signature`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
from plivo import plivoxml
from plivo.utils.signature_v3 import validate_v3_signature

from app.media.formats import AudioFormat, ByteOrder, Encoding
from app.providers.base import (
    CallbackFields,
    FrameError,
    OutboundRules,
    StreamEvent,
    StreamFraming,
    StreamMark,
    StreamStart,
    WebhookProvider,
    WebhookRequest,
    form_fields,
    text_field,
)
from app.providers.call_lists import MAX_PAGES, provider_time
from app.providers.control import (
    CallControl,
    Dialled,
    DialLookup,
    DialRequest,
    LegStatus,
    ProviderLeg,
    snake_case,
)
from app.providers.frames import (
    HOLE,
    JsonStreamFraming,
    OutboundMessages,
    byte_order_option,
    optional_object,
    require,
    require_object,
    wire_format,
)
from app.providers.rest import ProviderApiError, ProviderHttp, RetryPolicy, json_body
from app.schemas.telephony import PlivoConfig

SIGNATURE_HEADER = "x-plivo-signature-v3"
NONCE_HEADER = "x-plivo-signature-v3-nonce"

_EXTRA_HEADER_SEPARATORS = re.compile(r"[,;]")
API_BASE_URL = "https://api.plivo.com"

#: `CallStatus` of Plivo's ring and hangup callbacks.
PLIVO_CALL_STATUSES = {
    "ringing": LegStatus.RINGING,
    "in-progress": LegStatus.ANSWERED,
    "completed": LegStatus.COMPLETED,
    "busy": LegStatus.BUSY,
    "no-answer": LegStatus.NO_ANSWER,
    "timeout": LegStatus.NO_ANSWER,
    "failed": LegStatus.FAILED,
    "cancel": LegStatus.CANCELED,
}


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

    # Plivo answers clearAudio with clearedAudio; checkpoints are dropped.
    rules = OutboundRules(clear_returns_marks=False)

    def __init__(self, l16_byte_order: ByteOrder = "little") -> None:
        self.l16_byte_order = l16_byte_order
        self.stream_id = ""

    def decode_event(self, event: str, msg: dict[str, Any]) -> StreamEvent | None:
        if event == "playedStream":  # the answer to a checkpoint
            return StreamMark(str(require(msg, "name", "playedStream")))
        return super().decode_event(event, msg)  # media, dtmf, start; a stray `stop` is tolerated

    def decode_start(self, msg: dict[str, Any]) -> StreamStart:
        start = require_object(msg, "start", "start message")
        stream_id = start.get("streamId") or msg.get("streamId")
        if not isinstance(stream_id, str) or not stream_id:
            raise FrameError("start has no streamId")
        media_format = optional_object(start, "mediaFormat")
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
            provider_call_id=text_field(start, "callId"),
            audio_format=audio_format,
            custom_parameters=parse_extra_headers(msg.get("extra_headers")),
        )


class PlivoProvider(WebhookProvider[PlivoConfig]):
    """Plivo's answer-URL side, using plivo-python's validator and XML builder."""

    name = "plivo"
    config_model = PlivoConfig
    signature_headers = (SIGNATURE_HEADER, NONCE_HEADER)
    fields = CallbackFields(
        call_id="CallUUID",
        status="CallStatus",
        statuses=PLIVO_CALL_STATUSES,
        duration="Duration",
        status_details=("HangupCauseName", "HangupCause"),
    )

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

    def call_control(
        self, config: PlivoConfig, client: httpx.AsyncClient, policy: RetryPolicy
    ) -> CallControl:
        return PlivoCallControl(config, client, policy)

    def transfer_xml(self, target: str) -> str:
        dial = plivoxml.DialElement()
        sip = target.startswith(("sip:", "sips:"))
        dial.add(plivoxml.UserElement(target) if sip else plivoxml.NumberElement(target))
        return plivoxml.ResponseElement().add(dial).to_string(pretty=False)

    def hangup_xml(self) -> str:
        return plivoxml.ResponseElement().add(plivoxml.HangupElement()).to_string(pretty=False)


def plivo_error(response: httpx.Response) -> tuple[str | None, str]:
    """Plivo's errors: `{"api_id": ..., "error": "..."}` (the message may also be an object)."""
    body = json_body(response)
    if isinstance(body, dict) and body.get("error"):
        return None, str(body["error"])
    return None, response.text[:200] or response.reason_phrase


class PlivoCallControl(CallControl):
    """Plivo's Call API with Basic auth. A dial gives a `request_uuid`; the CallUUID arrives with the
    ring/answer callbacks. Until the call is answered it is cancelled as a request."""

    provider = "plivo"
    out_of_band_dtmf = True
    reserved_params = frozenset(
        {
            "from",
            "to",
            "answer_url",
            "answer_method",
            "hangup_url",
            "hangup_method",
            "ring_url",
            "ring_method",
        }
    )
    param_name = staticmethod(snake_case)

    def __init__(self, config: PlivoConfig, client: httpx.AsyncClient, policy: RetryPolicy) -> None:
        self.account_path = f"/v1/Account/{config.auth_id}"
        self.http = ProviderHttp(
            "plivo",
            client,
            str(config.api_base_url or API_BASE_URL),
            auth=httpx.BasicAuth(config.auth_id, config.auth_token),
            parse_error=plivo_error,
            policy=policy,
        )

    async def dial(self, request: DialRequest) -> Dialled:
        body = {
            "from": request.from_,
            "to": request.to,
            "answer_url": request.answer_url,
            "answer_method": "POST",
            "hangup_url": request.status_url,
            "hangup_method": "POST",
            "ring_url": request.status_url,
            "ring_method": "POST",
            "ring_timeout": request.ring_timeout_s,
            "time_limit": request.time_limit_s,
            **self.additional_params(request.additional_params),
        }
        path = f"{self.account_path}/Call/"
        answer = await self.http.send_for_object("create call", "POST", path, json=body, repeatable=False)
        request_uuid = answer.get("request_uuid")
        if isinstance(request_uuid, list):  # several destinations (`to` joined with `<`)
            request_uuid = request_uuid[0] if request_uuid else None
        return Dialled(None, str(request_uuid) if request_uuid else None)

    async def find_dialled(self, to: str, from_: str, since: datetime) -> DialLookup:
        """Plivo keeps three lists, asked in the order a call moves through them so none is missed: the
        queued calls (`status=queued`: request ids only, each then fetched for its numbers), the live ones
        (`status=live`, filtered by `from_number` / `to_number`) and the ended ones (the call records, by
        the numbers and `end_time__gte`; kept: those initiated at or after `since`)."""
        calls = f"{self.account_path}/Call/"
        numbers = {"from_number": _plain(from_), "to_number": _plain(to)}
        found: list[str] = []
        queued_ids: list[str] = []
        for request_uuid in await self._ids(calls, {"status": "queued"}):
            try:
                queued = await self.http.send_for_object(
                    "list calls", "GET", f"{calls}{request_uuid}/?{urlencode({'status': 'queued'})}"
                )
            except ProviderApiError as exc:
                if exc.status == 404:  # it left the queue since: the live or ended list has it
                    continue
                raise
            if (_plain(str(queued.get("to", ""))), _plain(str(queued.get("from", "")))) == (
                numbers["to_number"],
                numbers["from_number"],
            ):
                queued_ids.append(request_uuid)
        found += await self._ids(calls, {"status": "live", **numbers})
        ended = {**numbers, "end_time__gte": since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")}
        for offset in range(0, MAX_PAGES * PLIVO_PAGE, PLIVO_PAGE):
            page = await self.http.send_for_object(
                "list calls", "GET", f"{calls}?{urlencode({**ended, 'limit': PLIVO_PAGE, 'offset': offset})}"
            )
            records = page.get("objects")
            if not isinstance(records, list):
                raise ProviderApiError("plivo", "list calls", 200, None, "the answer has no `objects` list")
            for record in records:
                initiated = provider_time(record.get("initiation_time")) if isinstance(record, dict) else None
                if isinstance(record, dict) and (initiated is None or initiated >= since):
                    found.append(str(record.get("call_uuid")))
            meta = page.get("meta")
            if not (isinstance(meta, dict) and meta.get("next")):
                return DialLookup(tuple(dict.fromkeys(found)), tuple(queued_ids))
        raise ProviderApiError("plivo", "list calls", 200, None, f"more than {MAX_PAGES} pages of calls")

    async def _ids(self, path: str, filters: dict[str, str]) -> list[str]:
        """Every id of a `{"calls": [ids]}` list (queued, live), page by page."""
        ids: list[str] = []
        for offset in range(0, MAX_PAGES * PLIVO_PAGE, PLIVO_PAGE):
            query = urlencode({**filters, "limit": PLIVO_PAGE, "offset": offset})
            page = await self.http.send_for_object("list calls", "GET", f"{path}?{query}")
            listed = page.get("calls", [])
            if not isinstance(listed, list):
                raise ProviderApiError("plivo", "list calls", 200, None, "the answer's `calls` is not a list")
            ids += [str(one) for one in listed]
            if len(listed) < PLIVO_PAGE:
                return ids
        raise ProviderApiError("plivo", "list calls", 200, None, f"more than {MAX_PAGES} pages of calls")

    async def hang_up(self, leg: ProviderLeg) -> None:
        if leg.answered and leg.provider_call_id:
            path = f"{self.account_path}/Call/{leg.provider_call_id}/"
        elif leg.provider_request_id:
            path = f"{self.account_path}/Request/{leg.provider_request_id}/"
        else:
            raise ProviderApiError("plivo", "hang up", None, None, "the call has no Plivo id yet")
        try:
            await self.http.send("hang up", "DELETE", path)
        except ProviderApiError as exc:
            if exc.status != 404:  # already gone
                raise

    async def transfer(self, leg: ProviderLeg, target: str, transfer_url: str) -> None:
        body = {"legs": "aleg", "aleg_url": transfer_url, "aleg_method": "POST"}
        await self.http.send("transfer", "POST", self._call_path(leg, "transfer"), json=body)

    async def send_dtmf(self, leg: ProviderLeg, digits: str, tone_ms: int = 250) -> None:
        # Not repeated after a timeout: the digits may have been played already.
        path = self._call_path(leg, "send DTMF") + "DTMF/"
        await self.http.send(
            "send DTMF", "POST", path, json={"digits": digits, "leg": "aleg"}, repeatable=False
        )

    def _call_path(self, leg: ProviderLeg, action: str) -> str:
        if not leg.provider_call_id:
            raise ProviderApiError("plivo", action, None, None, "the call has no Plivo CallUUID yet")
        return f"{self.account_path}/Call/{leg.provider_call_id}/"


#: Plivo's largest page (`limit`) for its call lists.
PLIVO_PAGE = 20


def _plain(number: str) -> str:
    """A number as Plivo's lists write it: no leading `+`."""
    return number.removeprefix("+")
