"""A fake Twilio REST API for outbound calls: `Calls.json` create / update, signed status callbacks.

Shapes follow Twilio's Call resource docs and twilio-python: Basic auth `AccountSid:AuthToken`, form-encoded
requests, `201` with the Call resource, errors as `{code, message, more_info, status}`. `Status=canceled`
hangs up queued or ringing calls only; `Status=completed` hangs up in any state (a call that never answered
ends `canceled`). New TwiML (`Twiml`/`Url`) on a live call stops the stream (`stop`) and runs it; on a call
that is not in progress it fails with 21220. Status callbacks go to `StatusCallback` for the
`StatusCallbackEvent`s asked for (each its own field; only `completed` by default), signed with
`X-Twilio-Signature`.
"""

from __future__ import annotations

import email.utils
import http
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

from starlette.responses import JSONResponse, Response

from app.simulator.carrier import CarrierWire, StreamSetup
from app.simulator.provider_api import (
    ApiRequest,
    Event,
    FakeCall,
    FakeProviderApi,
    Handler,
    basic_auth,
    first,
    list_page,
)
from app.simulator.twilio import FakeTwilio, parse_connect_stream

API_VERSION = "2010-04-01"
#: Twilio's error codes and messages that do not follow `20000 + HTTP status`.
ERRORS = {401: (20003, "Authenticate")}
NOUNS = ("Number", "Sip", "Client", "Conference", "Queue")
SUBRESOURCES = [
    "events",
    "notifications",
    "payments",
    "recordings",
    "siprec",
    "streams",
    "transcriptions",
    "user_defined_message_subscriptions",
    "user_defined_messages",
]


def rfc2822(when: float | None) -> str | None:
    """A time as Twilio writes it: `Tue, 10 Aug 2010 08:02:17 +0000`."""
    if when is None:
        return None
    return email.utils.format_datetime(datetime.fromtimestamp(when, UTC)).replace("-0000", "+0000")


def twiml_action(twiml: str) -> tuple[str, str | None]:
    """What new TwiML does to a live call: ('dial', target), ('hangup', None) or ('other', None)."""
    for verb in ET.fromstring(twiml):
        if verb.tag == "Dial":
            noun = next((n for n in verb if n.tag in NOUNS), None)
            return "dial", ((noun.text if noun is not None else verb.text) or "").strip()
        if verb.tag == "Hangup":
            return "hangup", None
    return "other", None


class FakeTwilioApi(FakeProviderApi):
    """One Twilio account's REST API (`AccountSid`, `AuthToken`)."""

    provider = "twilio"

    def __init__(self, account_sid: str, auth_token: str) -> None:
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.twilio = FakeTwilio("", account_sid, auth_token)  # signing, TwiML parsing, the stream wire

    def routes(self) -> list[tuple[str, str, Handler]]:
        calls = "/2010-04-01/Accounts/{account_sid}/Calls"
        return [
            ("POST", calls + ".json", self.create),
            ("POST", calls + "/{sid}.json", self.update),
            ("GET", calls + ".json", self.list_calls),
            ("GET", calls + "/{sid}.json", self.fetch),
        ]

    def authorized(self, request: ApiRequest) -> bool:
        return basic_auth(request) == (self.account_sid, self.auth_token)

    def error(self, status: int, message: str | None = None, code: str | None = None) -> Response:
        default_code, default_message = ERRORS.get(status, (20000 + status, _phrase(status)))
        number = int(code) if code else default_code
        body = {
            "code": number,
            "message": message or default_message,
            "more_info": f"https://www.twilio.com/docs/errors/{number}",
            "status": status,
        }
        return JSONResponse(body, status_code=status)

    def not_found(self, request: ApiRequest) -> Response:
        return self.error(404, f"The requested resource {request.path} was not found")

    # --- REST ------------------------------------------------------------------------------------

    async def create(self, request: ApiRequest, path: dict[str, str]) -> Response:
        if path["account_sid"] != self.account_sid:
            return self.not_found(request)
        p = request.params
        if not first(p, "To"):
            return self.error(400, "No 'To' number is specified", "21201")
        if not (first(p, "Url") or first(p, "Twiml")):
            return self.error(400, "Url parameter is required.", "21205")
        if not first(p, "From"):
            return self.error(400, "No 'From' number is specified", "21213")
        call = self.dial(self.twilio.new_call_id(), first(p, "To"), first(p, "From"), p)
        await self.answer_late()
        return JSONResponse(self.resource(call), status_code=201)

    async def fetch(self, request: ApiRequest, path: dict[str, str]) -> Response:
        call = self.calls.get(path["sid"])
        if call is None or path["account_sid"] != self.account_sid:
            return self.not_found(request)
        return JSONResponse(self.resource(call))

    async def list_calls(self, request: ApiRequest, path: dict[str, str]) -> Response:
        """`GET Calls.json`: filtered by `To`, `From`, `Status`, `StartTime`/`StartTime>`/`StartTime<` and
        the same for `EndTime` (UTC dates, `YYYY-MM-DD`; `>` on or after, `<` on or before), newest first,
        paged by `PageSize` (default 50, at most 1000) and `Page` with its `PageToken`."""
        if path["account_sid"] != self.account_sid:
            return self.not_found(request)
        try:
            body = list_page(
                self.calls.values(),
                request.query,
                f"/2010-04-01/Accounts/{self.account_sid}/Calls.json",
                self.resource,
                self.status,
                self.started_at,
            )
        except ValueError as exc:
            return self.error(400, f"Invalid filter: {exc}", "20001")
        return JSONResponse(body)

    def status(self, call: FakeCall) -> str:
        return {"queued": "queued", "ringing": "ringing", "in-progress": "in-progress"}.get(
            call.state, call.end_status
        )

    def started_at(self, call: FakeCall) -> float | None:
        """Twilio's `start_time`: when the call was dialled (none while it is queued)."""
        return None if call.state == "queued" else call.created_at

    async def update(self, request: ApiRequest, path: dict[str, str]) -> Response:
        call = self.calls.get(path["sid"])
        if call is None or path["account_sid"] != self.account_sid:
            return self.not_found(request)
        p = request.params
        status, twiml, url = first(p, "Status"), first(p, "Twiml"), first(p, "Url")
        if status and status not in ("canceled", "completed"):
            return self.error(400, f"Status must be one of canceled, completed (not {status!r})")
        if (status or twiml or url) and not call.live:
            return self.error(400, "Call is not in-progress. Cannot redirect.", "21220")
        if status == "completed" or (status == "canceled" and call.state in ("queued", "ringing")):
            self.hang_up(call)
        elif twiml or url:
            if call.state != "in-progress":
                return self.error(400, "Call is not in-progress. Cannot redirect.", "21220")
            if twiml:
                try:
                    self.run_twiml(call, twiml)
                except SyntaxError:
                    return self.error(400, "Document parse failure", "12100")
            else:
                self.spawn(self.redirect(call, url, first(p, "Method") or "POST"))
        return JSONResponse(self.resource(call))

    def run_twiml(self, call: FakeCall, twiml: str) -> None:
        """New TwiML replaces `<Connect><Stream>` (Twilio sends `stop`): dial, hang up or just run it."""
        action, target = twiml_action(twiml)
        if action == "hangup":
            self.hang_up(call)
        else:
            self.transfer(call, target)

    async def redirect(self, call: FakeCall, url: str, method: str) -> None:
        """`Url=` on a live call: fetch the new TwiML (signed, like the first) and run it."""
        try:
            params = self.voice_params(call, "in-progress")
            twiml = await self.fetch_xml(call, url, params, method, "redirect")
            self.run_twiml(call, twiml)
        except Exception as exc:  # Twilio ends the call on an application error
            call.error = f"redirect failed: {exc!r}"
            self.hang_up(call)

    def resource(self, call: FakeCall) -> dict[str, Any]:
        """The Call resource as Twilio answers it."""
        base = f"/2010-04-01/Accounts/{self.account_sid}/Calls/{call.sid}"
        status = self.status(call)
        return {
            "account_sid": self.account_sid,
            "annotation": None,
            "answered_by": None,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": rfc2822(call.created_at),
            "date_updated": rfc2822(call.ended_at or call.answered_at or call.created_at),
            "direction": "outbound-api",
            "duration": None if call.live else str(call.duration),
            "end_time": rfc2822(call.ended_at),
            "forwarded_from": None,
            "from": call.from_,
            "from_formatted": call.from_,
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": None,
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": call.sid,
            "start_time": rfc2822(self.started_at(call)),
            "status": status,
            "subresource_uris": {name: f"{base}/{_camel(name)}.json" for name in SUBRESOURCES},
            "to": call.to,
            "to_formatted": call.to,
            "trunk_sid": "",
            "uri": f"{base}.json",
        }

    # --- the call's side ---------------------------------------------------------------------------

    def sign(self, url: str, params: dict[str, str], body: bytes, method: str) -> dict[str, str]:
        return {"X-Twilio-Signature": self.twilio.validator.compute_signature(url, params)}

    def status_name(self, status: str) -> str | None:
        return status

    def ring_timeout(self, call: FakeCall) -> float | None:
        return float(first(call.params, "Timeout") or 60)

    def status_callback(self, call: FakeCall, event: Event) -> tuple[str, str] | None:
        url = first(call.params, "StatusCallback")
        asked = call.params.get("StatusCallbackEvent") or ["completed"]
        events = set(asked if isinstance(asked, list) else [asked])
        if not url or event not in events:
            return None
        return url, first(call.params, "StatusCallbackMethod") or "POST"

    def voice_params(self, call: FakeCall, status: str) -> dict[str, str]:
        """The fields of every request Twilio makes about this call."""
        return {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "CallSid": call.sid,
            "CallStatus": status,
            "Called": call.to,
            "Caller": call.from_,
            "Direction": "outbound-api",
            "From": call.from_,
            "To": call.to,
        }

    def callback_params(self, call: FakeCall, event: Event) -> dict[str, str]:
        status = {"initiated": "initiated", "ringing": "ringing", "answered": "in-progress"}.get(event)
        params = {
            **self.voice_params(call, status or call.end_status),
            "CallbackSource": "call-progress-events",
            "SequenceNumber": str(call.sequence),
            "Timestamp": rfc2822(datetime.now(UTC).timestamp()) or "",
        }
        if event == "completed":
            params["CallDuration"] = str(call.duration)
        return params

    async def stream_setup(self, call: FakeCall) -> StreamSetup:
        twiml = first(call.params, "Twiml")
        if not twiml:
            method = first(call.params, "Method") or "POST"
            params = self.voice_params(call, "in-progress")
            twiml = await self.fetch_xml(call, first(call.params, "Url"), params, method, "url")
        url, parameters = parse_connect_stream(twiml)
        return self.twilio.stream_setup(url, parameters, call.sid)

    def wire(self, call: FakeCall, setup: StreamSetup) -> CarrierWire:
        return self.twilio.wire(setup)


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))
