"""A fake Telnyx REST API for outbound calls: TeXML `Calls` create, Call Control actions, signed callbacks.

Shapes follow Telnyx's OpenAPI (`texml/calls.yml`, call-control actions) and callback pages: Bearer auth,
JSON bodies with CamelCase keys for TeXML, errors as `{"errors": [{code, title, detail, meta, source}]}`.
The account-scoped create answers exactly what the spec documents — `{from, to, status: "queued"}`, no call
id — while the connection-scoped `POST /v2/texml/calls/{connection_id}` documents `call_sid` (the `v3:`
call_control_id) as well; the id also arrives as `CallSid` in every callback and TeXML fetch. Actions answer
`{"data": {"result": "ok"}}`; one on an ended call fails with 422 / 90018, before answer with 90034, and a
repeated `command_id` is not executed again. Callbacks are form-encoded and Ed25519-signed
(`telnyx-signature-ed25519` over `"{timestamp}|{body}"`).
"""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.responses import JSONResponse, Response

from app.simulator.carrier import CarrierWire, StreamSetup
from app.simulator.provider_api import (
    ApiRequest,
    Event,
    FakeCall,
    FakeProviderApi,
    Handler,
    first,
    list_page,
)
from app.simulator.telnyx import FakeTelnyx, parse_texml_stream
from app.simulator.twilio_api import rfc2822

#: HTTP status → (code, title, detail) from Telnyx's API error table.
ERRORS = {
    400: ("10015", "Bad Request", "The request failed because it was not well-formed."),
    401: (
        "10009",
        "Authentication failed",
        "The required authentication headers were either invalid or not included in the request.",
    ),
    403: (
        "10010",
        "Authorization failed",
        "You do not have permission to perform the requested action on the specified resource or resources.",
    ),
    404: ("10005", "Resource not found", "The requested resource or URL could not be found."),
    408: ("10008", "Request timeout", "The request timed out."),
    422: ("10015", "Bad Request", "The request failed because it was not well-formed."),
    429: ("10011", "Too many requests", "You have exceeded the maximum number of allowed requests."),
}
UNEXPECTED = ("10007", "Unexpected error", "An unexpected error occured.")
CALL_ENDED = ("90018", "Call has already ended", "This call is no longer active and can't receive commands.")
DTMF_DIGITS = re.compile(r"[0-9A-D*#wW]+")
HANGUP_CAUSES = {
    "completed": "normal_clearing",
    "busy": "user_busy",
    "no-answer": "timeout",
    "canceled": "originator_cancel",
    "failed": "unspecified",
}


def iso(when: float | None = None) -> str:
    """A UTC time as Telnyx's callbacks write it: `2024-01-15T10:30:26.028Z`."""
    moment = datetime.now(UTC) if when is None else datetime.fromtimestamp(when, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FakeTelnyxApi(FakeProviderApi):
    """One Telnyx account: its API key, its TeXML account sid, and the key it signs webhooks with."""

    provider = "telnyx"

    def __init__(
        self,
        api_key: str,
        signing_key: Ed25519PrivateKey | None = None,
        account_sid: str = "ACtelnyx",
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.account_sid = account_sid
        self.telnyx = FakeTelnyx("", signing_key, account_sid)  # signing, TeXML parsing, the stream wire
        self.commands: set[tuple[str, str]] = set()  # (call_control_id, command_id) already executed

    @property
    def public_key(self) -> str:
        """The base64 Ed25519 public key callbridge's config needs as `publicKey`."""
        return self.telnyx.public_key

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/v2/texml/Accounts/{account_sid}/Calls", self.create),
            ("GET", "/v2/texml/Accounts/{account_sid}/Calls", self.list_calls),
            ("GET", "/v2/texml/Accounts/{account_sid}/Calls.json", self.list_calls),  # its page URIs
            ("POST", "/v2/texml/calls/{connection_id}", self.create_scoped),
            ("POST", "/v2/calls/{call_control_id}/actions/{action}", self.action),
        ]

    def authorized(self, request: ApiRequest) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.api_key}"

    def error(self, status: int, message: str | None = None, code: str | None = None) -> Response:
        default_code, title, detail = ERRORS.get(status, UNEXPECTED)
        return self.fail(status, code or default_code, title, message or detail)

    def fail(self, status: int, code: str, title: str, detail: str, pointer: str | None = None) -> Response:
        """Telnyx's error body: `{"errors": [...]}` with the code's documentation URL."""
        error: dict[str, Any] = {
            "code": code,
            "title": title,
            "detail": detail,
            "meta": {"url": f"https://developers.telnyx.com/docs/overview/errors/{code}"},
        }
        if pointer:
            error["source"] = {"pointer": pointer}
        return JSONResponse({"errors": [error]}, status_code=status)

    def invalid(self, detail: str, pointer: str) -> Response:
        return self.fail(422, "10015", "Bad Request", detail, pointer)

    def missing(self, name: str) -> Response:
        detail = f"The '{name}' parameter is required."
        return self.fail(422, "10004", "Missing required parameter", detail, f"/{name}")

    # --- REST ------------------------------------------------------------------------------------

    async def create(self, request: ApiRequest, path: dict[str, str]) -> Response:
        """`POST /v2/texml/Accounts/{account_sid}/Calls`: answers `{from, to, status}` as documented."""
        if path["account_sid"] != self.account_sid:
            return self.error(404)
        refused = self._refusal(request.params, ("ApplicationSid", "To", "From"))
        if refused is not None:
            return refused
        call = self._dial(request.params, first(request.params, "ApplicationSid"))
        await self.answer_late()
        return JSONResponse({"from": call.from_, "to": call.to, "status": "queued"})

    async def list_calls(self, request: ApiRequest, path: dict[str, str]) -> Response:
        """`GET /v2/texml/Accounts/{account_sid}/Calls` ("Fetch multiple call resources"): filtered by To,
        From, Status and StartTime / EndTime dates, paged by Page, PageSize and PageToken; the page URIs
        name `Calls.json` as Telnyx's example answer does."""
        if path["account_sid"] != self.account_sid:
            return self.error(404)
        uri = f"/v2/texml/Accounts/{self.account_sid}/Calls.json"
        try:
            body = list_page(
                self.calls.values(), request.query, uri, self.resource, self.status, self.started_at
            )
        except ValueError as exc:
            return self.invalid(f"Invalid filter: {exc}", "/query")
        return JSONResponse(body)

    def status(self, call: FakeCall) -> str:
        return call.state if call.live else call.end_status

    def started_at(self, call: FakeCall) -> float | None:
        return None if call.state == "queued" else call.created_at

    def resource(self, call: FakeCall) -> dict[str, Any]:
        """A TeXML call resource as the list answers it."""
        return {
            "account_sid": self.account_sid,
            "answered_by": None,
            "caller_name": None,
            "date_created": rfc2822(call.created_at),
            "date_updated": rfc2822(call.ended_at or call.answered_at or call.created_at),
            "direction": "outbound-api",
            "duration": None if call.live else str(call.duration),
            "end_time": rfc2822(call.ended_at),
            "from": call.from_,
            "from_formatted": call.from_,
            "price": None,
            "price_unit": "USD",
            "sid": call.sid,
            "start_time": rfc2822(self.started_at(call)),
            "status": self.status(call),
            "to": call.to,
            "to_formatted": call.to,
            "uri": f"/v2/texml/Accounts/{self.account_sid}/Calls/{call.sid}.json",
        }

    async def create_scoped(self, request: ApiRequest, path: dict[str, str]) -> Response:
        """`POST /v2/texml/calls/{connection_id}`: a flat call object with `call_sid`."""
        refused = self._refusal(request.params, ("From", "To"))
        if refused is not None:
            return refused
        call = self._dial(request.params, path["connection_id"])
        await self.answer_late()
        return JSONResponse({"call_sid": call.sid, "from": call.from_, "to": call.to, "status": "queued"})

    def _refusal(self, params: dict[str, Any], required: tuple[str, ...]) -> Response | None:
        for name in required:
            if not first(params, name):
                return self.missing(name)
        if not (first(params, "Url") or first(params, "Texml")):
            # Telnyx would fetch the application's XML request URL; this fake knows no application.
            return self.missing("Url")
        return None

    def _dial(self, params: dict[str, Any], connection_id: str) -> FakeCall:
        sid = "v3:" + secrets.token_urlsafe(36)
        session, leg = str(uuid.uuid4()), str(uuid.uuid4())
        to, from_ = first(params, "To"), first(params, "From")
        return self.dial(
            sid, to, from_, params, connection_id=connection_id, call_session_id=session, call_leg_id=leg
        )

    async def action(self, request: ApiRequest, path: dict[str, str]) -> Response:
        """`POST /v2/calls/{call_control_id}/actions/{hangup|transfer|send_dtmf}`."""
        call = self.calls.get(path["call_control_id"])
        name = path["action"]
        if call is None or name not in ("hangup", "transfer", "send_dtmf"):
            return self.error(404)
        p = request.params
        command = (call.sid, str(p["command_id"])) if p.get("command_id") else None
        if command in self.commands:
            return JSONResponse({"data": {"result": "ok"}})  # a repeated command_id is ignored
        if not call.live:
            return self.fail(422, *CALL_ENDED)
        refused = self._refuse_action(call, name, p)
        if refused is not None:
            return refused
        if name == "hangup":
            self.hang_up(call)
        elif name == "transfer":
            self.transfer(call, str(p["to"]))
        else:
            call.dtmf.append(str(p["digits"]))
        if command is not None:
            self.commands.add(command)
        return JSONResponse({"data": {"result": "ok"}})

    def _refuse_action(self, call: FakeCall, name: str, p: dict[str, Any]) -> Response | None:
        if name == "hangup":
            return None
        field = "to" if name == "transfer" else "digits"
        if not p.get(field):
            return self.missing(field)
        if name == "send_dtmf":
            if not DTMF_DIGITS.fullmatch(str(p["digits"])):
                return self.invalid("digits may hold 0-9, A-D, *, #, w and W.", "/digits")
            duration = p.get("duration_millis")
            if duration is not None and not (isinstance(duration, int) and 100 <= duration <= 500):
                return self.invalid("duration_millis must be 100 to 500.", "/duration_millis")
        if call.state != "in-progress":
            detail = f"This call can't receive {name} command because it has not been answered yet."
            return self.fail(422, "90034", "Call not answered yet", detail)
        return None

    # --- the call's side ---------------------------------------------------------------------------

    def sign(self, url: str, params: dict[str, str], body: bytes, method: str) -> dict[str, str]:
        return self.telnyx.signature_headers(body)

    def status_name(self, status: str) -> str | None:
        return status

    def ring_timeout(self, call: FakeCall) -> float | None:
        return float(first(call.params, "Timeout") or 30)

    def status_callback(self, call: FakeCall, event: Event) -> tuple[str, str] | None:
        url = first(call.params, "StatusCallback")
        events = (first(call.params, "StatusCallbackEvent") or "completed").split()
        if not url or event not in events:
            return None
        return url, first(call.params, "StatusCallbackMethod") or "POST"

    def call_params(self, call: FakeCall, status: str) -> dict[str, str]:
        """The fields every TeXML request about this call carries."""
        return {
            "AccountSid": self.account_sid,
            "CallSid": call.sid,
            "CallSidLegacy": call.sid,
            "CallStatus": status,
            "ConnectionId": call.ids["connection_id"],
            "From": call.from_,
            "To": call.to,
            "Timestamp": iso(),
        }

    def callback_params(self, call: FakeCall, event: Event) -> dict[str, str]:
        status = {"initiated": "initiated", "ringing": "ringing", "answered": "in-progress"}.get(event)
        params = {
            **self.call_params(call, status or call.end_status),
            "CallbackSource": "call-progress-events",
            "CallInitiatedAt": iso(call.created_at),
            "SequenceNumber": str(call.sequence),
        }
        if event == "answered":
            params.update(Codec="PCMU", SamplingRate="8000")  # the phone leg's codec, not the stream's
        if event == "completed":
            params.update(
                EndTime=iso(call.ended_at),
                HangupCause=HANGUP_CAUSES.get(call.end_status, "unspecified"),
                HangupSource={"callee": "callee", "network": "unknown"}.get(call.ended_by, "caller"),
                OccurredAt=iso(call.ended_at),
            )
            if call.end_status == "completed":
                params.update(
                    CallControlId=call.sid,
                    CallLegId=call.ids["call_leg_id"],
                    CallSessionId=call.ids["call_session_id"],
                )
            if call.answered_at is not None:
                params.update(AnsweredTime=iso(call.answered_at), CallDuration=str(call.duration))
        return params

    async def stream_setup(self, call: FakeCall) -> StreamSetup:
        texml = first(call.params, "Texml")
        if not texml:
            method = first(call.params, "UrlMethod") or first(call.params, "Method") or "POST"
            params = {**self.call_params(call, "in-progress"), "Direction": "outbound-api"}
            texml = await self.fetch_xml(call, first(call.params, "Url"), params, method, "url")
        url, fmt = parse_texml_stream(texml)
        return StreamSetup(url, fmt, call.sid, {"From": call.from_, "To": call.to})

    def wire(self, call: FakeCall, setup: StreamSetup) -> CarrierWire:
        return self.telnyx.wire(setup)
