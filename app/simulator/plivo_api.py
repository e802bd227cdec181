"""A fake Plivo REST API for outbound calls: make / hang up / cancel / transfer / DTMF, V3-signed callbacks.

Shapes follow Plivo's Call API docs and plivo-python: Basic auth `AuthId:AuthToken`, JSON requests, answers
carrying `api_id`, errors as `{"api_id", "error"}`. Make call answers 201 `{"message": "call fired",
"request_uuid"}`; the call's own `CallUUID` arrives in the ring URL, answer URL and hangup URL requests,
each form-encoded and signed with `X-Plivo-Signature-V3`. Hang-up (`DELETE …/Call/{uuid}/`) and cancel
(`DELETE …/Request/{request_uuid}/`) answer 204; transfer and DTMF answer 202. Plivo sends no `stop` on the
stream: ending a call just closes the socket. `CallStatus` on hangup is one of completed, busy, no-answer,
failed, timeout or cancel.
"""

from __future__ import annotations

import http
import secrets
import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

from plivo.utils.signature_v3 import construct_get_url, get_signature_v3
from starlette.responses import JSONResponse, Response

from app.simulator.carrier import CarrierWire, StreamSetup, check
from app.simulator.plivo import FakePlivo, parse_plivo_stream
from app.simulator.provider_api import (
    ApiRequest,
    Event,
    FakeCall,
    FakeProviderApi,
    Handler,
    basic_auth,
    first,
)

STATUS_NAMES = {"canceled": "cancel", "queued": None, "initiated": None}
#: Final status → the standard telephony cause Plivo reports as `HangupCause`.
HANGUP_CAUSES = {
    "completed": "NORMAL_CLEARING",
    "busy": "USER_BUSY",
    "no-answer": "NO_ANSWER",
    "cancel": "ORIGINATOR_CANCEL",
    "failed": "CALL_REJECTED",
}
#: Plivo's documented (HangupCauseCode, HangupCauseName) for the hangups the fake can tell apart.
PLIVO_CAUSES = {
    "cancel": (1000, "Canceled"),
    "api": (4000, "Normal Hangup"),
    "callee": (4000, "Normal Hangup"),
    "callbridge": (4010, "End Of XML Instructions"),
}
HANGUP_SOURCES = {"api": "API Request", "callee": "Callee", "callbridge": "Plivo", "network": "Carrier"}


def plivo_time(when: float | None) -> str:
    """`yyyy-MM-dd HH:mm:ss` (UTC here), '' when not known."""
    return "" if when is None else datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M:%S")


def dial_target(xml: str) -> str | None:
    """The `<Dial><Number>` / `<Dial><User>` target of transfer XML (None: it dials nothing)."""
    dial = ET.fromstring(xml).find("./Dial")
    if dial is None:
        return None
    noun = next((n for n in dial if n.tag in ("Number", "User")), None)
    return (noun.text or "").strip() if noun is not None else None


class FakePlivoApi(FakeProviderApi):
    """One Plivo account's REST API (`AuthId`, `AuthToken`)."""

    provider = "plivo"

    def __init__(self, auth_id: str, auth_token: str) -> None:
        super().__init__()
        self.auth_id = auth_id
        self.auth_token = auth_token
        self.plivo = FakePlivo("", auth_id, auth_token)  # signing, XML parsing, the stream wire
        self.by_request: dict[str, FakeCall] = {}  # by request_uuid

    def routes(self) -> list[tuple[str, str, Handler]]:
        account = "/v1/Account/{auth_id}"
        return [
            ("POST", account + "/Call/", self.create),
            ("GET", account + "/Call/", self.list_calls),
            ("GET", account + "/Call/{call_uuid}/", self.get_call),
            ("POST", account + "/Call/{call_uuid}/", self.transfer_call),
            ("DELETE", account + "/Call/{call_uuid}/", self.hang_up_call),
            ("POST", account + "/Call/{call_uuid}/DTMF/", self.send_digits),
            ("DELETE", account + "/Request/{request_uuid}/", self.cancel_request),
        ]

    def authorized(self, request: ApiRequest) -> bool:
        return basic_auth(request) == (self.auth_id, self.auth_token)

    def error(self, status: int, message: str | None = None, code: str | None = None) -> Response:
        body = {"api_id": str(uuid.uuid4()), "error": message or _default(status)}
        return JSONResponse(body, status_code=status)

    def accepted(self, message: str, status: int = 202, **extra: str) -> Response:
        return JSONResponse({"api_id": str(uuid.uuid4()), "message": message, **extra}, status_code=status)

    # --- REST ------------------------------------------------------------------------------------

    def _live_call(self, path: dict[str, str]) -> FakeCall | None:
        call = self.calls.get(path.get("call_uuid", ""))
        return call if path["auth_id"] == self.auth_id and call is not None and call.live else None

    async def create(self, request: ApiRequest, path: dict[str, str]) -> Response:
        if path["auth_id"] != self.auth_id:
            return self.error(401)
        p = request.params
        for name in ("from", "to", "answer_url"):
            if not first(p, name):
                return self.error(400, f"Missing mandatory parameter: {name}")
        request_uuid = str(uuid.uuid4())
        call = self.dial(str(uuid.uuid4()), first(p, "to"), first(p, "from"), p, request_uuid=request_uuid)
        self.by_request[request_uuid] = call
        await self.answer_late()
        return self.accepted("call fired", 201, request_uuid=request_uuid)

    async def list_calls(self, request: ApiRequest, path: dict[str, str]) -> Response:
        """`GET …/Call/`: `status=queued` lists the queued calls' request ids, `status=live` the live calls'
        CallUUIDs (filtered by `from_number`, `to_number`), both as `{"api_id", "calls": [...]}`; without a
        status, the ended calls' records (`from_number`, `to_number`, `end_time` with `__gt`/`__gte`/`__lt`/
        `__lte`), paged by `limit` (at most 20) and `offset` with a `meta` block, newest first."""
        if path["auth_id"] != self.auth_id:
            return self.error(401)
        q = request.query
        try:
            limit, offset = int(q.get("limit", "20")), int(q.get("offset", "0"))
        except ValueError:
            return self.error(400, "limit and offset must be integers")
        if not (0 < limit <= 20 and offset >= 0):
            return self.error(400, "0 < limit <= 20 and 0 <= offset")
        newest = sorted(self.calls.values(), key=lambda c: c.created_at, reverse=True)
        calls = [c for c in newest if _numbers_match(c, q)]
        status = q.get("status")
        if status == "queued":
            ids = [c.ids["request_uuid"] for c in newest if c.state == "queued"]
            return JSONResponse({"api_id": str(uuid.uuid4()), "calls": ids[offset : offset + limit]})
        if status == "live":
            ids = [c.sid for c in calls if c.live and c.state != "queued"]
            return JSONResponse({"api_id": str(uuid.uuid4()), "calls": ids[offset : offset + limit]})
        try:
            ended = [c for c in calls if not c.live and _end_time_matches(c, q)]
        except ValueError as exc:
            return self.error(400, f"invalid end_time filter: {exc}")
        rows = ended[offset : offset + limit]
        following = offset + limit < len(ended)
        base = f"/v1/Account/{self.auth_id}/Call/"
        meta = {
            "limit": limit,
            "next": f"{base}?limit={limit}&offset={offset + limit}" if following else None,
            "offset": offset,
            "previous": f"{base}?limit={limit}&offset={max(0, offset - limit)}" if offset else None,
            "total_count": len(ended),
        }
        objects = [self.record(call) for call in rows]
        return JSONResponse({"api_id": str(uuid.uuid4()), "meta": meta, "objects": objects})

    async def get_call(self, request: ApiRequest, path: dict[str, str]) -> Response:
        """`GET …/Call/{id}/`: with `status=queued` a queued call by its request id, else a call record."""
        if path["auth_id"] != self.auth_id:
            return self.error(401)
        if request.query.get("status") == "queued":
            call = self.by_request.get(path["call_uuid"])
            if call is None or call.state != "queued":
                return self.error(404, "not found")
            body = {
                "api_id": str(uuid.uuid4()),
                "call_status": "queued",
                "caller_name": call.from_,
                "direction": "outbound",
                "from": call.from_,
                "request_uuid": call.ids["request_uuid"],
                "to": call.to,
            }
            return JSONResponse(body)
        call = self.calls.get(path["call_uuid"])
        if call is None or call.live:
            return self.error(404, "not found")
        return JSONResponse({"api_id": str(uuid.uuid4()), **self.record(call)})

    def record(self, call: FakeCall) -> dict[str, Any]:
        """An ended call's record (CDR) as Plivo lists it."""
        return {
            "answer_time": plivo_time(call.answered_at) or None,
            "bill_duration": call.duration,
            "billed_duration": call.duration,
            "call_direction": "outbound",
            "call_duration": call.duration,
            "call_state": "ANSWER" if call.answered_at is not None else "NOANSWER",
            "call_uuid": call.sid,
            "end_time": plivo_time(call.ended_at),
            "from_number": call.from_.removeprefix("+"),
            "hangup_cause_name": call.end_status,
            "initiation_time": plivo_time(call.created_at),
            "parent_call_uuid": None,
            "resource_uri": f"/v1/Account/{self.auth_id}/Call/{call.sid}/",
            "to_number": call.to.removeprefix("+"),
        }

    async def hang_up_call(self, request: ApiRequest, path: dict[str, str]) -> Response:
        """`DELETE …/Call/{call_uuid}/`: hang up a live call, or cancel one still ringing."""
        call = self._live_call(path)
        if call is None or not self.hang_up(call):
            return self.error(404)
        return Response(status_code=204)

    async def cancel_request(self, request: ApiRequest, path: dict[str, str]) -> Response:
        """`DELETE …/Request/{request_uuid}/`: cancel a call that has not been answered."""
        call = self.by_request.get(path["request_uuid"])
        if path["auth_id"] != self.auth_id or call is None or call.state not in ("queued", "ringing"):
            return self.error(404)
        self.hang_up(call)
        return Response(status_code=204)

    async def transfer_call(self, request: ApiRequest, path: dict[str, str]) -> Response:
        """`POST …/Call/{call_uuid}/` with `legs`, `aleg_url`: Plivo fetches the URL and runs its XML."""
        call = self._live_call(path)
        if call is None or call.state != "in-progress":
            return self.error(404)
        p = request.params
        legs = first(p, "legs")
        if legs not in ("aleg", "bleg", "both"):
            return self.error(400, "legs must be aleg, bleg or both")
        if legs != "bleg" and not first(p, "aleg_url"):
            return self.error(400, "aleg_url is required when legs is aleg or both")
        if legs != "bleg":
            self.spawn(self._transfer(call, first(p, "aleg_url"), first(p, "aleg_method") or "POST"))
        return self.accepted("call transferred")

    async def _transfer(self, call: FakeCall, url: str, method: str) -> None:
        try:
            xml = await self.fetch_xml(call, url, self.call_params(call, "in-progress"), method, "transfer")
            self.transfer(call, dial_target(xml))
        except Exception as exc:  # unreachable URL or broken XML: Plivo hangs up
            call.error = f"transfer failed: {exc!r}"
            self.hang_up(call)

    async def send_digits(self, request: ApiRequest, path: dict[str, str]) -> Response:
        """`POST …/Call/{call_uuid}/DTMF/` with `digits` (and `leg`)."""
        call = self._live_call(path)
        if call is None or call.state != "in-progress":
            return self.error(404)
        digits = first(request.params, "digits")
        if not digits:
            return self.error(400, "Missing mandatory parameter: digits")
        call.dtmf.append(digits)
        return self.accepted("digits sent")

    # --- the call's side ---------------------------------------------------------------------------

    def sign(self, url: str, params: dict[str, str], body: bytes, method: str) -> dict[str, str]:
        if method != "GET":
            return self.plivo.sign(url, body, params)
        nonce = str(secrets.randbelow(10**20))
        base = construct_get_url(url, {}).decode()
        signature = get_signature_v3(self.auth_token.encode(), base, nonce.encode()).decode()
        return {"X-Plivo-Signature-V3": signature, "X-Plivo-Signature-V3-Nonce": nonce}

    def status_name(self, status: str) -> str | None:
        return STATUS_NAMES.get(status, status)

    def ring_timeout(self, call: FakeCall) -> float | None:
        return float(first(call.params, "ring_timeout") or 120)

    def status_callback(self, call: FakeCall, event: Event) -> tuple[str, str] | None:
        p = call.params
        if event == "ringing" and first(p, "ring_url"):
            return first(p, "ring_url"), first(p, "ring_method") or "POST"
        if event == "completed":  # without a hangup_url, Plivo notifies the answer_url
            url = first(p, "hangup_url") or first(p, "answer_url")
            method = first(p, "hangup_method" if first(p, "hangup_url") else "answer_method") or "POST"
            return url, method
        return None

    def call_params(self, call: FakeCall, status: str) -> dict[str, str]:
        """The fields of every request Plivo makes about this outbound call."""
        request_uuid = call.ids["request_uuid"]
        return {
            "ALegRequestUUID": request_uuid,
            "ALegUUID": call.sid,
            "CallStatus": status,
            "CallUUID": call.sid,
            "Direction": "outbound",
            "From": call.from_.lstrip("+"),
            "RequestUUID": request_uuid,
            "To": call.to.lstrip("+"),
        }

    def callback_params(self, call: FakeCall, event: Event) -> dict[str, str]:
        if event != "completed":
            return self.call_params(call, "ringing")
        params = {
            **self.call_params(call, call.end_status),
            "AnswerTime": plivo_time(call.answered_at),
            "BillDuration": str(call.duration),
            "Duration": str(call.duration),
            "EndTime": plivo_time(call.ended_at),
            "Event": "Hangup",
            "HangupCause": HANGUP_CAUSES.get(call.end_status, "NORMAL_CLEARING"),
            "HangupSource": HANGUP_SOURCES.get(call.ended_by, "Unknown"),
            "StartTime": plivo_time(call.created_at),
        }
        cause = PLIVO_CAUSES.get("cancel" if call.end_status == "cancel" else call.ended_by)
        if cause is not None:
            params.update(HangupCauseCode=str(cause[0]), HangupCauseName=cause[1])
        return params

    async def stream_setup(self, call: FakeCall) -> StreamSetup:
        params = {**self.call_params(call, "in-progress"), "Event": "StartApp"}
        method = first(call.params, "answer_method") or "POST"
        xml = await self.fetch_xml(call, first(call.params, "answer_url"), params, method, "answer")
        url, fmt, headers = parse_plivo_stream(xml)
        stream = ET.fromstring(xml).find("./Stream")
        keep = stream is not None and stream.get("keepCallAlive") == "true"
        check(keep or len(ET.fromstring(xml)) > 1, 'without keepCallAlive="true" Plivo ends the call at once')
        return StreamSetup(url, fmt, call.sid, headers)

    def wire(self, call: FakeCall, setup: StreamSetup) -> CarrierWire:
        return self.plivo.wire(setup)


def _numbers_match(call: FakeCall, query: dict[str, str]) -> bool:
    """The `from_number` / `to_number` filters (numbers compared without a leading `+`)."""
    wanted = [(call.from_, query.get("from_number")), (call.to, query.get("to_number"))]
    return all(
        given is None or number.removeprefix("+") == given.removeprefix("+") for number, given in wanted
    )


def _end_time_matches(call: FakeCall, query: dict[str, str]) -> bool:
    """The `end_time` filters: `yyyy-MM-dd HH:mm[:ss]` in UTC, exact or `__gt`, `__gte`, `__lt`, `__lte`."""
    ended = datetime.fromtimestamp(call.ended_at or 0, UTC).replace(microsecond=0)
    tests = {
        "": ended.__eq__,
        "__gt": ended.__gt__,
        "__gte": ended.__ge__,
        "__lt": ended.__lt__,
        "__lte": ended.__le__,
    }
    for suffix, test in tests.items():
        given = query.get(f"end_time{suffix}")
        if given and not test(datetime.fromisoformat(given).replace(tzinfo=UTC)):
            return False
    return True


def _default(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"
