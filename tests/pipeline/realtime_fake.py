"""A fake OpenAI Realtime (GA) endpoint on a loopback port, and `openaiRealtime` pipelines started against it.

The fake follows the published GA event schema: it checks the `session.update` shape (rejecting it with an
`error` naming the event, as the API does), acks with `session.updated`, answers `response.create` with
`response.created` → `response.output_item.added` → `response.output_audio.delta`s →
`response.output_audio_transcript.done` → `response.output_item.done` → `response.done`, checks truncations
against the audio it sent, and lets a test speak for the model (speech_started, function calls, errors, a
dropped connection).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any, TypeVar

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from app.media.formats import PCMU_8K, AudioFormat
from app.pipeline.base import PipelineEvent
from app.pipeline.openai_realtime import OpenAIRealtimeOptions, OpenAIRealtimePipeline
from tests.pipeline.conftest import CALL_INFO, WAIT_S

#: GA audio formats → bytes per millisecond.
FORMAT_BYTES_PER_MS = {"audio/pcmu": 8, "audio/pcma": 8, "audio/pcm": 48}
SESSION_KEYS = {"type", "model", "instructions", "output_modalities", "audio", "tools", "tool_choice"}
T = TypeVar("T")

TRANSCRIPT = "Thanks for calling Ada's Bakery, how can I help?"


def session_problems(event: dict[str, Any]) -> list[str]:
    """What is wrong with a `session.update` under the GA schema (empty: nothing)."""
    session = event.get("session")
    if not isinstance(session, dict):
        return ["session must be an object"]
    problems = [f"unknown parameter session.{key}" for key in session.keys() - SESSION_KEYS]
    if session.get("type") != "realtime":
        problems.append("session.type must be 'realtime'")
    for key in ("model", "instructions"):
        if not isinstance(session.get(key), str):
            problems.append(f"session.{key} must be a string")
    audio = session.get("audio") or {}
    audio_in, audio_out = audio.get("input") or {}, audio.get("output") or {}
    problems += _format_problems("input", audio_in.get("format"))
    problems += _format_problems("output", audio_out.get("format"))
    if not isinstance(audio_out.get("voice"), str):
        problems.append("session.audio.output.voice must be a string")
    if (audio_in.get("turn_detection") or {}).get("type") != "server_vad":
        problems.append("session.audio.input.turn_detection.type must be server_vad")
    if "transcription" in audio_in and not isinstance(audio_in["transcription"].get("model"), str):
        problems.append("session.audio.input.transcription.model must be a string")
    problems += _tool_problems(session.get("tools"))
    if session.get("tool_choice") not in (None, "auto", "none", "required"):
        problems.append("session.tool_choice is invalid")
    return problems


def _format_problems(direction: str, fmt: Any) -> list[str]:
    if not isinstance(fmt, dict) or fmt.get("type") not in FORMAT_BYTES_PER_MS:
        return [f"session.audio.{direction}.format.type must be audio/pcm, audio/pcmu or audio/pcma"]
    if fmt["type"] == "audio/pcm" and fmt.get("rate") != 24000:
        return [f"session.audio.{direction}.format.rate must be 24000"]
    return []


def _tool_problems(tools: Any) -> list[str]:
    if not isinstance(tools, list):
        return ["session.tools must be a list"]
    return [
        f"session.tools[{index}] must be a function tool with a name and object parameters"
        for index, tool in enumerate(tools)
        if tool.get("type") != "function"
        or not isinstance(tool.get("name"), str)
        or (tool.get("parameters") or {}).get("type") != "object"
    ]


class FakeRealtime:
    """A Realtime endpoint: records the handshake and every client event; the test speaks for the model."""

    def __init__(
        self,
        *,
        finish_responses: bool = True,
        answer_responses: bool = True,
        reject_status: int | None = None,
        reject_session: str | None = None,
    ) -> None:
        self.port = 0
        self.finish_responses = finish_responses  # False: responses stay in progress until `finish()`
        self.answer_responses = answer_responses  # False: response.create waits (see `_cancel`)
        self._held = 0  # response.create not answered yet
        self.reject_status = reject_status  # refuse the handshake with this HTTP status
        self.reject_session = reject_session  # refuse every session.update with this error message
        self.confirm_session = True  # False: take session.update without answering session.updated
        self.path: str | None = None
        self.headers: Headers | None = None
        self.ws: ServerConnection | None = None
        self.session: dict[str, Any] = {}
        self.order: list[str] = []  # client event types, as received
        self.audio_in = bytearray()
        self.item_audio_ms: dict[str, float] = {}  # assistant item → ms of audio sent
        self.audio_item: str | None = None  # the latest assistant audio item
        self.response_id: str | None = None  # the response in progress
        self._received: defaultdict[str, asyncio.Queue[dict[str, Any]]] = defaultdict(asyncio.Queue)
        self._ids = itertools.count(1)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    @property
    def bytes_per_ms(self) -> int:
        return FORMAT_BYTES_PER_MS[self.session["audio"]["output"]["format"]["type"]]

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.reject_status is None:
            return None
        return connection.respond(HTTPStatus(self.reject_status), "no\n")

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.ws, self.path, self.headers = ws, ws.request.path, ws.request.headers
        await self.send({"type": "session.created", "session": {"type": "realtime", "model": "gpt-realtime"}})
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                event = orjson.loads(message)
                self.order.append(event["type"])
                await self._handle(event)
                self._received[event["type"]].put_nowait(event)

    # --- what the fake does with client events --------------------------------------------------

    async def _handle(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "session.update":
            await self._session_update(event)
        elif kind == "input_audio_buffer.append":
            self.audio_in += base64.b64decode(event["audio"], validate=True)
        elif kind == "response.create" and self.answer_responses:
            await self.respond()
        elif kind == "response.create":
            self._held += 1
        elif kind == "response.cancel":
            await self._cancel(event)
        elif kind == "conversation.item.truncate":
            await self._truncate(event)

    async def _session_update(self, event: dict[str, Any]) -> None:
        problems = session_problems(event)
        if self.reject_session:
            problems.append(self.reject_session)
        if problems:
            await self.error("unknown_parameter", "; ".join(problems), event_id=event.get("event_id"))
            return
        self.session = event["session"]
        if self.confirm_session:
            await self.send({"type": "session.updated", "session": self.session})

    async def respond(self, finish: bool | None = None) -> None:
        """Answer a `response.create`: a spoken response of `reply_audio()` with a transcript."""
        response_id, item_id = f"resp_{next(self._ids)}", f"item_{next(self._ids)}"
        self.response_id, self.audio_item = response_id, item_id
        at = {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}
        await self.send(
            {"type": "response.created", "response": {"id": response_id, "status": "in_progress"}}
        )
        item = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        await self.send({"type": "response.output_item.added", "response_id": response_id, "item": item})
        for chunk in self.reply_audio():
            await self.audio_delta(chunk)
        await self.send({"type": "response.output_audio.done", **at})
        await self.send({"type": "response.output_audio_transcript.done", **at, "transcript": TRANSCRIPT})
        if self.finish_responses if finish is None else finish:
            await self.finish()

    def reply_audio(self) -> list[bytes]:
        """Three distinct 20 ms chunks in the session's output format."""
        return [bytes([n]) * 20 * self.bytes_per_ms for n in (1, 2, 3)]

    async def audio_delta(self, chunk: bytes, item_id: str | None = None) -> None:
        """One `response.output_audio.delta` of the current (or the given) item."""
        item_id = item_id or self.audio_item
        assert item_id is not None
        self.item_audio_ms[item_id] = self.item_audio_ms.get(item_id, 0.0) + len(chunk) / self.bytes_per_ms
        await self.send(
            {
                "type": "response.output_audio.delta",
                "response_id": self.response_id,
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "delta": base64.b64encode(chunk).decode(),
            }
        )

    async def finish(self, status: str = "completed", output: list[dict[str, Any]] | None = None) -> None:
        """`response.done` for the response in progress."""
        response_id, self.response_id = self.response_id, None
        response = {"id": response_id, "status": status, "output": output or []}
        await self.send({"type": "response.done", "response": response})

    async def _cancel(self, event: dict[str, Any]) -> None:
        if self._held:  # the API handles events in order: a request sent before the cancel starts first
            self._held -= 1
            await self.respond(finish=False)
        if self.response_id is None:
            await self.error(
                "response_cancel_not_active", "no active response", event_id=event.get("event_id")
            )
        else:
            await self.finish("cancelled")

    async def _truncate(self, event: dict[str, Any]) -> None:
        end, item_id = event.get("audio_end_ms"), event.get("item_id")
        if event.get("content_index") != 0 or not isinstance(end, int) or item_id not in self.item_audio_ms:
            await self.error("invalid_value", "bad truncate", event_id=event.get("event_id"))
        elif end > self.item_audio_ms[item_id]:
            await self.error(
                "invalid_value", "audio_end_ms is past the audio", event_id=event.get("event_id")
            )
        else:
            await self.send(
                {
                    "type": "conversation.item.truncated",
                    "item_id": item_id,
                    "content_index": 0,
                    "audio_end_ms": end,
                }
            )

    # --- the test's side ------------------------------------------------------------------------

    async def next(self, kind: str) -> dict[str, Any]:
        """The next client event of type `kind`."""
        return await asyncio.wait_for(self._received[kind].get(), WAIT_S)

    async def send(self, event: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send(orjson.dumps({"event_id": f"event_{next(self._ids)}", **event}).decode())

    async def speech_started(self) -> None:
        await self.send(
            {"type": "input_audio_buffer.speech_started", "audio_start_ms": 1000, "item_id": "item_user"}
        )

    async def user_transcript(self, text: str) -> None:
        await self.send(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": f"item_{next(self._ids)}",
                "content_index": 0,
                "transcript": text,
                "usage": {"type": "duration", "seconds": 1.2},
            }
        )

    async def function_call(
        self,
        name: str,
        arguments: dict[str, Any],
        call_id: str = "call_1",
        *,
        finish: bool = True,
        status: str = "completed",
    ) -> None:
        """A response whose output is one function call, announced the GA way (arguments done, item done).

        `finish=False` leaves the response in progress (`finish()` ends it); `status="incomplete"` is a call
        cut short (its response cancelled)."""
        response_id, item_id = f"resp_{next(self._ids)}", f"item_{next(self._ids)}"
        encoded = orjson.dumps(arguments).decode()
        item = {"id": item_id, "type": "function_call", "call_id": call_id, "name": name, "arguments": ""}
        await self.send(
            {"type": "response.created", "response": {"id": response_id, "status": "in_progress"}}
        )
        await self.send({"type": "response.output_item.added", "response_id": response_id, "item": {**item}})
        await self.send(
            {
                "type": "response.function_call_arguments.done",
                "response_id": response_id,
                "item_id": item_id,
                "output_index": 0,
                "call_id": call_id,
                "arguments": encoded,
            }
        )
        done_item = {**item, "arguments": encoded, "status": status}
        await self.send({"type": "response.output_item.done", "response_id": response_id, "item": done_item})
        self.response_id = response_id
        if finish:
            await self.finish("completed" if status == "completed" else "cancelled", output=[done_item])

    async def error(
        self, code: str, message: str, *, kind: str = "invalid_request_error", event_id: Any = None
    ) -> None:
        await self.send(
            {"type": "error", "error": {"type": kind, "code": code, "message": message, "event_id": event_id}}
        )

    async def drop(self) -> None:
        """Lose the connection: no closing handshake."""
        assert self.ws is not None
        self.ws.transport.abort()


@asynccontextmanager
async def realtime_server(**options: Any) -> AsyncIterator[FakeRealtime]:
    """A FakeRealtime listening on a loopback port."""
    fake = FakeRealtime(**options)
    async with serve(fake.handler, "127.0.0.1", 0, process_request=fake.process_request) as server:
        fake.port = server.sockets[0].getsockname()[1]
        yield fake


def make_pipeline(url: str, **options: Any) -> OpenAIRealtimePipeline:
    return OpenAIRealtimePipeline(
        OpenAIRealtimeOptions.model_validate({"url": url, "apiKey": "sk-test", **options})
    )


@asynccontextmanager
async def started_pipeline(
    fake: FakeRealtime, audio_format: AudioFormat = PCMU_8K, **options: Any
) -> AsyncIterator[OpenAIRealtimePipeline]:
    """An `openaiRealtime` pipeline started against `fake` (its session accepted), closed afterwards."""
    pipeline = make_pipeline(**{"url": fake.url, **options})
    await asyncio.wait_for(pipeline.start(CALL_INFO, audio_format), WAIT_S)
    try:
        yield pipeline
    finally:
        await pipeline.close()


async def next_event(pipeline: OpenAIRealtimePipeline) -> PipelineEvent:
    """The pipeline's next event (fails the test if none comes)."""
    return await asyncio.wait_for(anext(aiter(pipeline.events())), WAIT_S)


async def events_until(pipeline: OpenAIRealtimePipeline, kind: type[T]) -> tuple[list[PipelineEvent], T]:
    """Events up to the first `kind` one: (those before it, it)."""
    before: list[PipelineEvent] = []
    while not isinstance(event := await next_event(pipeline), kind):
        before.append(event)
    return before, event


def decoded(event: dict[str, Any]) -> bytes:
    """The audio of an `input_audio_buffer.append`."""
    try:
        return base64.b64decode(event["audio"], validate=True)
    except binascii.Error as exc:  # pragma: no cover - the assertion message is the point
        raise AssertionError(f"append audio is not base64: {exc}") from None
