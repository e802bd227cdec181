"""Live views for the console, as server-sent events: the calls as they change, and one call's events and
audio levels while it is live.

Both read the shared database (polled), so they are right on any instance of a cluster. A call's levels
are measured by the instance holding its media, and only while someone watches (nothing is metered
otherwise); a stream on another instance asks the holder for each window over the cluster's control bus.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from app.api.calls import control_call, event_view
from app.api.route_doc import DocRoute, RouteDoc
from app.calls.call_media import CallMedia
from app.cluster.base import ControlReply
from app.errors import NotFound, ServiceError
from app.media.levels import CallLevels
from app.services import Services, services_of
from app.store.tables import CallRow

#: How often the database is read for calls' changes and new events.
POLL_INTERVAL_S = 0.5
#: The window of each levels event (its RMS is over this much audio).
LEVELS_INTERVAL_S = 0.25
#: A watcher on another instance that has not asked for this long is gone: its meters are detached.
FORWARDED_IDLE_S = 2.0
#: The `type` of the control request for a window's levels (not a data message: never from the API).
LEVELS_REQUEST = "console_levels"
#: Sent when nothing else was for this long, so proxies keep the stream open (and a stream whose client
#: left ends: uvicorn tells it only when a write fails).
KEEPALIVE_S = 5.0
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(event: str, data: Any) -> bytes:
    """One server-sent event."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _stream(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers=_SSE_HEADERS)


def _call_state(row: CallRow) -> tuple[Any, ...]:
    return (row.joined, row.ended, row.end_reason)


async def stream_calls(request: Request) -> Response:
    services = services_of(request)
    return _stream(_calls_changes(services))


async def _calls_changes(services: Services) -> AsyncIterator[bytes]:
    """The live calls at once, then every call created, joined or ended (until the service drains)."""
    last_seq = await services.calls_repo.last_seq()
    rows = await services.calls_repo.watch(None, ())
    live: dict[str, tuple[Any, ...]] = {}
    quiet = 0.0
    while not services.draining:
        for row in rows:
            last_seq = max(last_seq, row.seq)
            state = _call_state(row)
            if live.get(row.id) == state:
                continue
            if row.ended is None:
                live[row.id] = state
            else:
                live.pop(row.id, None)
            yield sse("call", services.calls.to_schema(row).to_json())
            quiet = 0.0
        if quiet >= KEEPALIVE_S:
            yield b": keep-alive\n\n"
            quiet = 0.0
        await asyncio.sleep(POLL_INTERVAL_S)
        quiet += POLL_INTERVAL_S
        rows = await services.calls_repo.watch(last_seq, list(live))


async def stream_call_events(request: Request) -> Response:
    services = services_of(request)
    call_id = request.path_params["call_id"]
    if await services.calls_repo.get(call_id) is None:
        raise NotFound("call_not_found", f"no call with id {call_id}")
    return _stream(_call_events(services, call_id))


async def _call_events(services: Services, call_id: str) -> AsyncIterator[bytes]:
    """The call's events so far, then new ones and its levels while it is live; `ended` last."""
    watch = _LevelWatch(services, call_id)
    reads_every = round(POLL_INTERVAL_S / LEVELS_INTERVAL_S)
    keepalive_every = round(KEEPALIVE_S / LEVELS_INTERVAL_S)
    try:
        last_seq, ended_reads, tick = 0, 0, 0
        while not services.draining:
            if tick % reads_every == 0:
                row = await services.calls_repo.get(call_id)
                await services.events.flush()  # what this instance recorded a moment ago
                for event in await services.event_repo.after(call_id, last_seq):
                    last_seq = event.seq
                    yield sse("call_event", event_view(event))
                if row is None or row.ended is not None:
                    # One more read after the end: another instance writes its last events behind.
                    ended_reads += 1
                    if ended_reads > 1:
                        call = services.calls.to_schema(row).to_json() if row is not None else None
                        yield sse("ended", call)
                        return
            if ended_reads == 0:
                levels = await watch.levels()
                if levels is not None:
                    yield sse("levels", levels)
            tick += 1
            if tick % keepalive_every == 0:
                yield b": keep-alive\n\n"
            await asyncio.sleep(LEVELS_INTERVAL_S)
    finally:
        watch.stop()


class _LevelWatch:
    """A call's meters while its events stream is open: attached once the call's media exists here, or
    asked of the instance holding it."""

    def __init__(self, services: Services, call_id: str) -> None:
        self._services = services
        self._call_id = call_id
        self._meters: CallLevels | None = None
        self._told_unavailable = False
        self._request = orjson.dumps({"type": LEVELS_REQUEST, "watcher": secrets.token_hex(8)})

    async def levels(self) -> dict[str, Any] | None:
        """The last window's levels (None: nothing new to say, e.g. the call is not joined yet)."""
        session = self._services.sessions.get(self._call_id)
        if session is not None and session.media is not None:
            if self._meters is None:
                self._meters = session.media.watch_levels()
                return None  # the first window starts now
            return {"available": True, **self._meters.take()}
        if self._meters is not None:  # its media was here and is gone: the call is ending
            return None
        try:
            reply = await self._services.cluster.forward(self._call_id, self._request)
        except ServiceError as exc:
            return self._unavailable(f"the instance holding the call's media cannot be asked: {exc.detail}")
        if reply is None:
            return self._unavailable("no instance holds the call's media (yet)")
        self._told_unavailable = False
        return orjson.loads(reply.body) if reply.body else None

    def _unavailable(self, reason: str) -> dict[str, Any] | None:
        """Said once (until levels come again)."""
        if self._told_unavailable:
            return None
        self._told_unavailable = True
        return {"available": False, "reason": reason}

    def stop(self) -> None:
        if self._meters is None:
            return
        session = self._services.sessions.get(self._call_id)
        if session is not None and session.media is not None:
            session.media.unwatch_levels(self._meters)
        self._meters = None


class ForwardedLevels:
    """The meters of calls held here that streams on other instances watch, one per watcher: attached at
    its first request, detached once it has not asked for FORWARDED_IDLE_S."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._watched: dict[tuple[str, str], tuple[CallMedia, CallLevels, float]] = {}
        self._sweep: asyncio.TimerHandle | None = None

    def answer(self, call_id: str, watcher: str) -> ControlReply:
        """The window's levels (200), or 204 for the first request (its window starts now)."""
        session = self._services.sessions.get(call_id)
        if session is None or session.media is None:
            return ControlReply(200, orjson.dumps({"available": False, "reason": "the call's media is gone"}))
        loop = asyncio.get_running_loop()
        key = (call_id, watcher)
        found = self._watched.get(key)
        if found is None or found[0] is not session.media:
            self._watched[key] = (session.media, session.media.watch_levels(), loop.time())
            reply = ControlReply(204)
        else:
            self._watched[key] = (found[0], found[1], loop.time())
            reply = ControlReply(200, orjson.dumps({"available": True, **found[1].take()}))
        if self._sweep is None:
            self._sweep = loop.call_later(FORWARDED_IDLE_S, self._detach_idle)
        return reply

    def _detach_idle(self) -> None:
        now = asyncio.get_running_loop().time()
        for key, (media, meters, asked) in list(self._watched.items()):
            if now - asked >= FORWARDED_IDLE_S:
                media.unwatch_levels(meters)
                del self._watched[key]
        self._sweep = None
        if self._watched:
            self._sweep = asyncio.get_running_loop().call_later(FORWARDED_IDLE_S, self._detach_idle)


async def control(services: Services, levels: ForwardedLevels, call_id: str, body: bytes) -> ControlReply:
    """A control request another instance forwarded for a call held here: a console's levels request, or a
    data message (`calls.control_call`)."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        request = None  # control_call answers it with the API's error
    if isinstance(request, dict) and request.get("type") == LEVELS_REQUEST:
        return levels.answer(call_id, str(request.get("watcher", "")))
    return await control_call(services, call_id, body)


_NO_CALL = (404, "call_not_found")
_SSE = {"type": "string", "description": "text/event-stream"}
ROUTES = [
    DocRoute(
        "/calls/stream",
        stream_calls,
        methods=["GET"],
        doc=RouteDoc(
            "Follow the calls as they change (server-sent events)",
            "calls",
            "A `text/event-stream`: first an `event: call` for each live call, then one whenever a call is "
            "created, joined or ended, its `data` the call as `GET /api/calls/{callId}` shows it. Read "
            f"from the shared database every {POLL_INTERVAL_S:g} s, so every instance sees every call. A "
            "comment line keeps an idle stream open. Read it with `fetch` (EventSource cannot send "
            "`X-API-Key`).",
            response=_SSE,
            media_type="text/event-stream",
        ),
    ),
    DocRoute(
        "/calls/{call_id}/events/stream",
        stream_call_events,
        methods=["GET"],
        doc=RouteDoc(
            "Follow a call's events and audio levels (server-sent events)",
            "calls",
            "A `text/event-stream`: `event: call_event` for each of the call's events so far (every "
            "severity), then for each new one; while the call is live, `event: levels` every "
            f"{LEVELS_INTERVAL_S:g} s with `callerToAgent` and `agentToCaller`, the RMS level in dBFS of "
            "that window's audio (null: silence), or `available: false` with a `reason` while no instance "
            "holds the call's media (levels are measured only where the media is, asked over the cluster's "
            "control bus from any other instance, and only while watched); "
            "last `event: ended` with the call, and the stream ends.",
            response=_SSE,
            media_type="text/event-stream",
            errors=(_NO_CALL,),
        ),
    ),
]
