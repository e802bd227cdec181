"""The provider's side of outbound calls: a fake REST API that dials, rings, answers and streams.

`FakeProviderApi` is the provider-independent engine: it serves the provider's REST routes (Starlette on
uvicorn, in a background task), records every request, injects failures (`fail_next`), and runs each dialled
call in its own task — initiated, ringing, then the queued outcome (`outcome` when none is queued): `answer`
fetches the call's XML, opens the media stream with the carrier machinery (`open_stream`) and plays
`callee`; busy / no-answer / failed end the call after `ring_seconds` without a stream, with the provider's
final status callback as for a real unanswered call. `answer_delay` holds each create's answer back (the
call is dialled first), as a slow provider does. REST hang-ups, cancels and transfers act on that
lifecycle. Status callbacks are form-encoded and signed by the provider module, and what callbridge answered
each of them is recorded.

A provider module (`twilio_api`, `telnyx_api`, `plivo_api`) adds only what is the provider's own: routes,
validation, response and error bodies, callback fields and signatures, XML fetching and status names.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import math
import socket
import time
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.simulator.audio import speech_like
from app.simulator.carrier import (
    CallReport,
    CallScript,
    CarrierWire,
    Progress,
    ProtocolViolation,
    StreamSession,
    StreamSetup,
    WebhookRejected,
    open_stream,
)

Outcome = Literal["answer", "busy", "no-answer", "failed"]
#: The engine's call statuses, in the order a call can go through them (providers rename them).
QUEUED, INITIATED, RINGING, IN_PROGRESS = "queued", "initiated", "ringing", "in-progress"
FINAL_STATUSES = ("completed", "busy", "no-answer", "failed", "canceled")
#: The progress events a status callback can be sent for.
Event = Literal["initiated", "ringing", "answered", "completed"]


def default_callee() -> CallScript:
    """About a second of voice-like test signal at 8 kHz, then a second of silence."""
    return CallScript(audio=speech_like(1.0, 8000), tail_seconds=1.0)


@dataclass
class ApiRequest:
    """One REST request as the fake received it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    params: dict[str, Any]  # form fields (a list when repeated) or the JSON body
    received_at: float  # time.monotonic()
    query: dict[str, str] = field(default_factory=dict)  # the URL's query (list endpoints' filters)


@dataclass
class Callback:
    """One request the provider made to callbridge (status callback or XML fetch) and callbridge's answer."""

    url: str
    params: dict[str, str]
    http_status: int | None  # None: callbridge could not be reached
    event: str = ""
    method: str = "POST"
    body: str = ""  # callbridge's answer


@dataclass
class FakeCall:
    """One dialled call and everything that happened to it."""

    sid: str
    to: str
    from_: str
    params: dict[str, Any]  # the create request
    outcome: Outcome = "answer"
    ids: dict[str, str] = field(default_factory=dict)  # the provider's other ids (Plivo's request_uuid)
    statuses: list[str] = field(default_factory=list)  # in the provider's names, in order
    callbacks: list[Callback] = field(default_factory=list)
    fetches: list[Callback] = field(default_factory=list)  # XML fetches (answer URL, transfer URL)
    report: CallReport | None = None
    transfers: list[str] = field(default_factory=list)
    dtmf: list[str] = field(default_factory=list)
    hangups: int = 0
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end_status: str = ""  # the provider's name for the final status
    ended_by: str = ""  # callee, callbridge, api or network
    error: str | None = None  # what went wrong (callbridge's XML, stream protocol, ...)
    state: str = QUEUED  # the engine's: queued, ringing, in-progress, ended
    created_at: float = field(default_factory=time.time)
    answered_at: float | None = None
    ended_at: float | None = None
    sequence: int = 0  # status callbacks sent so far
    session: StreamSession | None = field(default=None, repr=False)
    stop: asyncio.Event = field(default_factory=asyncio.Event, repr=False)  # hang-up / cancel requested
    redirected: bool = False  # new instructions (transfer) replaced the stream

    @property
    def live(self) -> bool:
        return self.state != "ended"

    @property
    def duration(self) -> int:
        """Whole seconds from answer to end (0 when never answered)."""
        if self.answered_at is None:
            return 0
        return round((self.ended_at or time.time()) - self.answered_at)


Handler = Callable[[ApiRequest, dict[str, str]], Awaitable[Response]]


class FakeProviderApi(ABC):
    """A provider's REST API for outbound calls, served on a loopback port (see the module docstring)."""

    provider: str

    def __init__(self) -> None:
        self.callee: CallScript = default_callee()
        self.ring_seconds = 0.1  # between ringing and the outcome
        self.initiate_delay = 0.05  # between the create response and the first callback
        self.transfer_seconds = 0.1  # how long a transferred call stays up after its stream stopped
        self.answer_delay = 0.0  # between dialling a created call and answering the create request
        self.outcome: Outcome = "answer"  # what a call does after ringing when no outcome is queued
        self.on_progress: Callable[[Progress], None] | None = None  # the stream's, once a second
        self.base_url = ""
        self.requests: list[ApiRequest] = []
        self.calls: dict[str, FakeCall] = {}
        #: Calls dialled to each number (what exactly-once tests read).
        self.dials: Counter[str] = Counter()
        self._outcomes: deque[Outcome] = deque()
        self._failures: deque[tuple[int, str | None]] = deque()
        self._dialled: asyncio.Queue[FakeCall] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: uvicorn.Server | None = None
        self._serving: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None
        self._http: httpx.AsyncClient | None = None

    # --- what each provider module supplies -------------------------------------------------------

    @abstractmethod
    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) for every REST route."""

    @abstractmethod
    def authorized(self, request: ApiRequest) -> bool:
        """Whether the request carries this account's credentials."""

    @abstractmethod
    def error(self, status: int, message: str | None = None, code: str | None = None) -> Response:
        """An error answer in the provider's own shape (its default code and text for `status`)."""

    @abstractmethod
    def sign(self, url: str, params: dict[str, str], body: bytes, method: str) -> dict[str, str]:
        """The signature headers the provider puts on a request to `url`."""

    @abstractmethod
    def status_name(self, status: str) -> str | None:
        """The provider's name for an engine status (None: the provider has no such status)."""

    @abstractmethod
    def status_callback(self, call: FakeCall, event: Event) -> tuple[str, str] | None:
        """(URL, method) the provider notifies for `event` on this call, or None."""

    @abstractmethod
    def callback_params(self, call: FakeCall, event: Event) -> dict[str, str]:
        """The status callback's form fields for `event` (the final status is `call.end_status`)."""

    @abstractmethod
    async def stream_setup(self, call: FakeCall) -> StreamSetup:
        """Fetch and parse the call's XML as the provider does on answer (ProtocolViolation if wrong)."""

    @abstractmethod
    def wire(self, call: FakeCall, setup: StreamSetup) -> CarrierWire: ...

    def ring_timeout(self, call: FakeCall) -> float | None:
        """How long the provider lets the call ring before giving up (the create request's timeout)."""
        return None

    # --- behaviour knobs -------------------------------------------------------------------------

    def queue_outcome(self, outcome: Outcome) -> None:
        """What the next dialled call does after ringing (first in, first out; then `outcome`)."""
        self._outcomes.append(outcome)

    def fail_next(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        """Answer the next `times` REST requests with this HTTP error (and `Retry-After` when given)."""
        self._failures.extend([(status, retry_after)] * times)

    async def wait_for_call(self, timeout: float = 10) -> FakeCall:  # noqa: ASYNC109
        """The next dialled call, in dialling order."""
        return await asyncio.wait_for(self._dialled.get(), timeout)

    # --- serving -----------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve the API on `host:port` (0: any free port) and return its base URL."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        app = Starlette(
            routes=[
                Route(path, self._endpoint(handler), methods=[verb]) for verb, path, handler in self.routes()
            ]
        )
        self._server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
        self._serving = asyncio.create_task(
            self._server.serve(sockets=[sock]), name=f"fake-{self.provider}-api"
        )
        self._socket = sock
        self._http = httpx.AsyncClient(timeout=10)
        while not self._server.started:
            if self._serving.done():
                await self._serving
                raise RuntimeError(f"the fake {self.provider} API stopped before it started")
            await asyncio.sleep(0.01)
        self.base_url = f"http://{host}:{sock.getsockname()[1]}"
        return self.base_url

    async def stop(self) -> None:
        """End every call still running and stop serving."""
        for call in self.calls.values():
            if call.session is not None:
                call.session.hang_up()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            await self._serving
        if self._socket is not None:
            self._socket.close()
        if self._http is not None:
            await self._http.aclose()

    def _endpoint(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            api_request = ApiRequest(
                method=request.method,
                path=request.url.path,
                headers={k.lower(): v for k, v in request.headers.items()},
                params=await _params(request),
                received_at=time.monotonic(),
                query=dict(request.query_params),
            )
            self.requests.append(api_request)
            if self._failures:
                status, retry_after = self._failures.popleft()
                response = self.error(status)
                if retry_after is not None:
                    response.headers["Retry-After"] = retry_after
                return response
            if not self.authorized(api_request):
                return self.error(401)
            return await handler(api_request, dict(request.path_params))

        return endpoint

    # --- the lifecycle of one call -----------------------------------------------------------------

    def dial(self, sid: str, to: str, from_: str, params: dict[str, Any], **ids: str) -> FakeCall:
        """Register a call the create request asked for and start ringing it (in the background)."""
        outcome = self._outcomes.popleft() if self._outcomes else self.outcome
        call = FakeCall(sid=sid, to=to, from_=from_, params=params, outcome=outcome, ids=dict(ids))
        self.calls[sid] = call
        self.dials[to] += 1
        self._record_status(call, QUEUED)
        self._dialled.put_nowait(call)
        self.spawn(self._lifecycle(call))
        return call

    async def answer_late(self) -> None:
        """Hold a create's answer back by `answer_delay` (after `dial`: the call is out already)."""
        if self.answer_delay:
            await asyncio.sleep(self.answer_delay)

    def spawn(self, work: Awaitable[Any]) -> None:
        """Run `work` in the background, cancelled by `stop()`."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lifecycle(self, call: FakeCall) -> None:
        try:
            status = await self._progress_call(call)
        except asyncio.CancelledError:  # stop(): no more callbacks
            call.state = "ended"
            call.ended.set()
            raise
        except Exception as exc:  # one broken call never stops the others
            call.error = call.error or f"fake {self.provider} API: {exc!r}"
            status = "completed" if call.answered_at is not None else "failed"
        await self._finish(call, status)

    async def _progress_call(self, call: FakeCall) -> str:
        await asyncio.sleep(self.initiate_delay)
        if call.stop.is_set():
            return "canceled"
        await self._notify(call, INITIATED)
        call.state = RINGING
        await self._notify(call, RINGING)
        outcome = await self._ring(call)
        if call.stop.is_set():
            return "canceled"
        if outcome != "answer":
            call.ended_by = "network"
            return outcome
        await self._answer(call)
        return "completed"

    async def _ring(self, call: FakeCall) -> str:
        timeout = self.ring_timeout(call)
        wait = self.ring_seconds if timeout is None else min(self.ring_seconds, timeout)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(call.stop.wait(), wait)
        if timeout is not None and timeout < self.ring_seconds:
            return "no-answer"
        return call.outcome

    async def _answer(self, call: FakeCall) -> None:
        call.state = IN_PROGRESS
        call.answered_at = time.time()
        self._record_status(call, IN_PROGRESS)
        try:
            setup: StreamSetup | None = await self.stream_setup(call)
        except (ProtocolViolation, WebhookRejected, httpx.HTTPError, SyntaxError) as exc:
            call.error = f"{type(exc).__name__}: {exc}"
            setup = None
        await self._callback(call, "answered")
        if setup is None or call.stop.is_set():
            call.ended_by = call.ended_by or "api"
            return
        await self._stream(call, setup)
        if call.redirected:
            await asyncio.sleep(self.transfer_seconds)  # the transferred call, after the stream stopped

    async def _stream(self, call: FakeCall, setup: StreamSetup) -> None:
        def attach(session: StreamSession) -> None:
            call.session = session
            if call.stop.is_set():
                session.hang_up()

        try:
            wire = self.wire(call, setup)
            call.report = await open_stream(setup, wire, self.callee, self.on_progress, on_session=attach)
            if not call.ended_by:
                call.ended_by = "callbridge" if call.report.ended_by == "callbridge" else "callee"
        except ProtocolViolation as exc:
            call.error = f"ProtocolViolation: {exc}"
            call.ended_by = call.ended_by or "callbridge"
        except OSError as exc:
            call.error = f"stream failed: {exc!r}"
            call.ended_by = call.ended_by or "network"
        except Exception as exc:  # websockets' handshake errors and the like
            call.error = f"stream failed: {exc!r}"
            call.ended_by = call.ended_by or "network"
        finally:
            call.session = None

    async def _finish(self, call: FakeCall, status: str) -> None:
        call.state = "ended"
        call.ended_at = time.time()
        call.end_status = self.status_name(status) or status
        self._record_status(call, status)
        try:
            await self._callback(call, "completed")
        finally:
            call.ended.set()

    def _record_status(self, call: FakeCall, status: str) -> None:
        name = self.status_name(status)
        if name is not None:
            call.statuses.append(name)

    async def _notify(self, call: FakeCall, status: str) -> None:
        self._record_status(call, status)
        await self._callback(call, "initiated" if status == INITIATED else "ringing")

    async def _callback(self, call: FakeCall, event: Event) -> None:
        target = self.status_callback(call, event)
        if target is None:
            return
        url, method = target
        params = self.callback_params(call, event)
        call.sequence += 1
        call.callbacks.append(await self.request_callbridge(url, params, method, event))

    # --- REST actions the provider modules share ---------------------------------------------------

    def hang_up(self, call: FakeCall) -> bool:
        """Cancel a queued/ringing call or hang up a live one (False: it has already ended)."""
        if not call.live:
            return False
        call.hangups += 1
        call.ended_by = call.ended_by or "api"
        call.stop.set()
        if call.session is not None:
            call.session.hang_up()
        return True

    def transfer(self, call: FakeCall, target: str | None) -> bool:
        """New instructions replace the stream: record the dial target (if any), end the stream the way
        the provider does, and let the call complete shortly after (False: the call is not live)."""
        if call.state != IN_PROGRESS:
            return False
        if target is not None:
            call.transfers.append(target)
        call.redirected = True
        call.ended_by = call.ended_by or "api"
        call.stop.set()
        if call.session is not None:
            call.session.hang_up()
        return True

    async def request_callbridge(
        self, url: str, params: dict[str, str], method: str = "POST", event: str = ""
    ) -> Callback:
        """Send a signed, form-encoded request to callbridge as the provider does; record its answer."""
        assert self._http is not None, "start() the fake first"
        method = method.upper()
        if method == "GET":
            target = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}" if params else url
            send = self._http.get(target, headers=self.sign(target, {}, b"", "GET"))
        else:
            body = urlencode(params).encode()
            headers = {
                "content-type": "application/x-www-form-urlencoded",
                **self.sign(url, params, body, "POST"),
            }
            send = self._http.post(url, content=body, headers=headers)
        try:
            response = await send
        except httpx.HTTPError as exc:
            return Callback(url, params, None, event, method, repr(exc))
        return Callback(url, params, response.status_code, event, method, response.text)

    async def fetch_xml(
        self, call: FakeCall, url: str, params: dict[str, str], method: str, event: str
    ) -> str:
        """Fetch instructions from callbridge (signed); WebhookRejected unless it answers 200."""
        fetched = await self.request_callbridge(url, params, method, event)
        call.fetches.append(fetched)
        if fetched.http_status != 200:
            raise WebhookRejected(fetched.http_status or 0, fetched.body)
        return fetched.body


def most_live_at_once(calls: Iterable[FakeCall]) -> int:
    """The most calls up at one moment (from their create and end times; a live call counts as up)."""
    edges = sorted(
        [(call.created_at, 1) for call in calls] + [(call.ended_at or math.inf, -1) for call in calls]
    )
    live = most = 0
    for _, step in edges:
        live += step
        most = max(most, live)
    return most


DATE_FILTERS = ("StartTime", "StartTime>", "StartTime<", "EndTime", "EndTime>", "EndTime<")


def list_page(
    calls: Iterable[FakeCall],
    query: dict[str, str],
    uri: str,
    render: Callable[[FakeCall], dict[str, Any]],
    status: Callable[[FakeCall], str],
    started_at: Callable[[FakeCall], float | None],
) -> dict[str, Any]:
    """One page of a TwiML-style Calls list (Twilio's `Calls.json`, Telnyx's TeXML `Calls`).

    Filters: `To`, `From`, `Status`, `StartTime`/`StartTime>`/`StartTime<` and the same for `EndTime` (UTC
    dates `YYYY-MM-DD`; `>` on or after, `<` on or before; a call not started or not ended never matches
    those). Newest first, paged by `PageSize` (default 50, at most 1000) and `Page` with its `PageToken`.
    ValueError for a filter that is not one.
    """
    size = min(1000, max(1, int(query.get("PageSize", "50"))))
    page = max(0, int(query.get("Page", "0")))
    dates = {key: date.fromisoformat(query[key]) for key in DATE_FILTERS if query.get(key)}

    def matches(call: FakeCall) -> bool:
        times = {"S": started_at(call), "E": call.ended_at}
        return (
            query.get("To", call.to) == call.to
            and query.get("From", call.from_) == call.from_
            and query.get("Status", status(call)) == status(call)
            and all(_on(times[key[0]], key, day) for key, day in dates.items())
        )

    listed = [call for call in sorted(calls, key=lambda call: call.created_at, reverse=True) if matches(call)]
    start = page * size
    rows = listed[start : start + size]
    filters = {k: v for k, v in query.items() if k not in ("Page", "PageSize", "PageToken")}

    def page_uri(number: int) -> str:
        token = {"PageToken": f"PA{number * size}"} if number else {}
        return f"{uri}?{urlencode({**filters, 'PageSize': size, 'Page': number, **token})}"

    return {
        "calls": [render(call) for call in rows],
        "end": start + max(len(rows) - 1, 0),
        "first_page_uri": page_uri(0),
        "next_page_uri": page_uri(page + 1) if start + size < len(listed) else None,
        "page": page,
        "page_size": size,
        "previous_page_uri": page_uri(page - 1) if page else None,
        "start": start,
        "uri": page_uri(page),
    }


def _on(when: float | None, key: str, day: date) -> bool:
    if when is None:
        return False
    on = datetime.fromtimestamp(when, UTC).date()
    return on >= day if key.endswith(">") else on <= day if key.endswith("<") else on == day


async def _params(request: Request) -> dict[str, Any]:
    """The request's form fields (repeated ones as lists) or JSON object ({} when there is neither)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        params: dict[str, Any] = {}
        for key, value in form.multi_items():
            text = value if isinstance(value, str) else ""
            if key in params:
                previous = params[key]
                params[key] = [*previous, text] if isinstance(previous, list) else [previous, text]
            else:
                params[key] = text
        return params
    body = await request.body()
    if not body:
        return {}
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {"_raw": body.decode(errors="replace")}
    return parsed if isinstance(parsed, dict) else {"_json": parsed}


def first(params: dict[str, Any], key: str) -> str:
    """A form field's (first) value, '' when absent."""
    value = params.get(key, "")
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return "" if value is None else str(value)


def basic_auth(request: ApiRequest) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic` header."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None
