"""The `openaiRealtime` agent: a speech-to-speech model behind an OpenAI-Realtime-compatible websocket.

One connection per call. callbridge configures the session (prompt, audio format, server VAD, tools),
streams the caller's audio, plays the model's audio, truncates what the caller did not hear on barge-in,
and turns the built-in tools into call actions. The protocol pieces live in app/pipeline/realtime_events.py;
docs/openai-realtime.md is the user-facing description.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from app.media.formats import AudioFormat
from app.pipeline import realtime_events as rt
from app.pipeline.agent_link import AgentEvents, Outbox, connect_agent, shown_url, websocket_url
from app.pipeline.base import (
    AgentAudio,
    AgentClear,
    CallInfo,
    HangUp,
    Pipeline,
    PipelineError,
    PipelineEvent,
    Transcript,
)
from app.pipeline.secret_options import PipelineSecret, revealed
from app.schemas.durations import Duration, PositiveDuration

log = logging.getLogger(__name__)


#: Server events whose audio / transcript names changed at GA: both spellings are understood.
AUDIO_DELTA_EVENTS = ("response.output_audio.delta", "response.audio.delta")
AGENT_TRANSCRIPT_EVENTS = ("response.output_audio_transcript.done", "response.audio_transcript.done")


class OpenAIRealtimeOptions(BaseModel):
    """`callTemplate.pipeline.openaiRealtime`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    url: str = Field(
        default="wss://api.openai.com/v1/realtime",
        description="The Realtime websocket endpoint; `?model=` is added when the URL has none",
    )
    model: str = Field(default="gpt-realtime", min_length=1, description="The Realtime model")
    voice: str = Field(default="marin", min_length=1, description="The voice the model speaks with")
    api_key: PipelineSecret | None = Field(
        default=None, alias="apiKey", repr=False, description="API key sent as `Authorization: Bearer`"
    )
    api_key_env: str | None = Field(
        default=None,
        alias="apiKeyEnv",
        description="Environment variable holding the API key (read per call)",
    )
    transcribe_model: str | None = Field(
        default="gpt-4o-mini-transcribe",
        alias="transcribeModel",
        description="Model transcribing the caller (null: no caller transcripts)",
    )
    vad_threshold: float | None = Field(
        default=None, alias="vadThreshold", ge=0.0, le=1.0, description="Server VAD activation threshold"
    )
    vad_prefix_padding: Duration | None = Field(
        default=None, alias="vadPrefixPadding", description="Audio kept before detected speech"
    )
    vad_silence_duration: Duration | None = Field(
        default=None, alias="vadSilenceDuration", description="Silence that ends the caller's turn"
    )
    connect_timeout: PositiveDuration = Field(
        default=5.0,
        alias="connectTimeout",
        description="How long connecting and having the session accepted may take",
    )

    _websocket_url = field_validator("url")(websocket_url)

    @model_validator(mode="after")
    def _one_key_source(self) -> Self:
        if self.api_key and self.api_key_env:
            raise ValueError("give apiKey or apiKeyEnv, not both")
        return self

    def turn_detection(self) -> dict[str, Any]:
        """`audio.input.turn_detection`: server VAD with the configured tuning."""
        vad: dict[str, Any] = {"type": "server_vad"}
        if self.vad_threshold is not None:
            vad["threshold"] = self.vad_threshold
        if self.vad_prefix_padding is not None:
            vad["prefix_padding_ms"] = round(self.vad_prefix_padding * 1000)
        if self.vad_silence_duration is not None:
            vad["silence_duration_ms"] = round(self.vad_silence_duration * 1000)
        return vad


def realtime_url(url: str, model: str) -> str:
    """`url` with `?model=` added when its query has none."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name == "model" for name, _ in query):
        return url
    return urlunsplit(parts._replace(query=urlencode([*query, ("model", model)])))


class OpenAIRealtimePipeline(Pipeline):
    """One call's Realtime session."""

    accepted_formats = rt.REALTIME_FORMATS

    def __init__(self, options: OpenAIRealtimeOptions) -> None:
        self.options = options
        self._url = shown_url(options.url)
        self._instructions = ""
        self._format: AudioFormat = rt.PCM_24K
        self._ws: ClientConnection | None = None
        self._outbox = Outbox()
        self._events = AgentEvents()
        self._sender: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._session_ready: asyncio.Future[None] | None = None
        self._timeline = rt.AgentAudioTimeline()
        self._response_active = False
        self._response_id: str | None = None
        self._requests: deque[dict[str, Any]] = deque()  # response.create waiting for the active one
        self._last_request: dict[str, Any] | None = None
        self._request_count = 0
        self._interrupted: set[str] = set()  # item and response ids cut by barge-in: late audio is dropped
        self._cancel_next = False  # a cancel went out before the response it stops was announced
        self._handled_calls: set[str] = set()
        self._gone = False  # the endpoint closed, dropped or failed
        self._hung_up = False
        self._closed = False

    # --- starting -------------------------------------------------------------------------------

    async def start(self, info: CallInfo, audio_format: AudioFormat) -> None:
        """Connect, configure the session and wait until it is accepted; PipelineError if it is not."""
        session = rt.session_update(
            model=self.options.model,
            instructions=info.system_prompt,
            voice=self.options.voice,
            audio_format=audio_format,
            turn_detection=self.options.turn_detection(),
            transcribe_model=self.options.transcribe_model,
        )
        self._format, self._instructions = audio_format, info.system_prompt
        ws = await self._connect()
        if self._closed:  # the call ended while connecting
            await ws.close()
            return
        self._ws = ws
        self._session_ready = asyncio.get_running_loop().create_future()
        self._outbox.put([rt.encode(session)])
        self._sender = asyncio.create_task(self._outbox.send_to(ws), name=f"realtime-send-{info.call_id}")
        self._reader = asyncio.create_task(self._read_loop(ws), name=f"realtime-read-{info.call_id}")
        try:
            await self._await_session()
        except PipelineError:
            await self.close()
            raise

    async def _connect(self) -> ClientConnection:
        return await connect_agent(
            realtime_url(self.options.url, self.options.model),
            self._auth_headers(),
            self.options.connect_timeout,
            f"the Realtime endpoint {self._url}",
        )

    def _auth_headers(self) -> dict[str, str]:
        key = revealed(self.options.api_key) if self.options.api_key else None
        if self.options.api_key_env:
            key = os.environ.get(self.options.api_key_env)
            if not key:
                raise PipelineError(f"the API key variable {self.options.api_key_env} (apiKeyEnv) is not set")
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def _await_session(self) -> None:
        assert self._session_ready is not None
        timeout = self.options.connect_timeout
        done, _ = await asyncio.wait({self._session_ready}, timeout=timeout)
        if self._closed and not done:
            return
        if not done:
            raise PipelineError(
                f"the Realtime endpoint {self._url} did not accept the session within {timeout:g}s"
            )
        self._session_ready.result()

    # --- caller → agent -------------------------------------------------------------------------

    async def send_audio(self, audio: bytes) -> None:
        """Queue caller audio for the session; never waits (the oldest is dropped if the endpoint lags)."""
        if not self._accepting:
            return
        dropped = self._outbox.dropped_audio
        self._outbox.put([rt.append_audio(audio)], audio=True)
        if dropped == 0 and self._outbox.dropped_audio:
            log.warning(
                "the Realtime endpoint %s is not keeping up: dropping the oldest caller audio", self._url
            )

    async def send_dtmf(self, digit: str) -> None:
        """Nothing: the bridge turns keys into user text (`send_user_text`) itself."""

    async def playback_position(self, played_ms: float) -> None:
        """Remember how much agent audio the caller heard (used to truncate on barge-in)."""
        self._timeline.played(played_ms)

    async def send_user_text(self, text: str) -> bool:
        """Add a user message with `text` and ask for a response."""
        if not self._accepting or self._hung_up:
            return False
        self._send(rt.user_text(text))
        self._request_response()
        return True

    async def speak(self, text: str | None = None, prompt: str | None = None) -> bool:
        """Ask for a response now: saying `text` verbatim, following `prompt`, or as the model sees fit."""
        if not self._accepting or self._hung_up:
            return False
        if text is not None:
            self._request_response(rt.say_exactly(self._instructions, text))
        elif prompt is not None:
            self._request_response(rt.follow(self._instructions, prompt))
        else:
            self._request_response()
        return True

    @property
    def _accepting(self) -> bool:
        return self._ws is not None and not self._closed and not self._gone

    def _send(self, event: dict[str, Any]) -> None:
        if self._accepting:
            self._outbox.put([rt.encode(event)])

    def _request_response(self, instructions: str | None = None) -> None:
        """`response.create` now, or once the active response is done (one at a time per conversation)."""
        self._request_count += 1
        self._requests.append(
            rt.response_create(f"{rt.RESPONSE_ID_PREFIX}{self._request_count}", instructions)
        )
        self._send_next_request()

    def _send_next_request(self) -> None:
        if self._response_active or not self._requests:
            return
        self._last_request = self._requests.popleft()
        self._response_active = True  # until response.done (or an error about this request)
        self._send(self._last_request)

    # --- agent → bridge -------------------------------------------------------------------------

    async def _read_loop(self, ws: ClientConnection) -> None:
        try:
            while not self._gone:
                self._dispatch(await ws.recv())
        except ConnectionClosed as exc:
            self._connection_ended(exc)
        except Exception as exc:  # a bug here must end this call, not leave it silent
            self._fail(exc)

    def _dispatch(self, message: str | bytes) -> None:
        """Handle one server event; malformed or unknown events are logged and skipped."""
        try:
            event = orjson.loads(message)
        except orjson.JSONDecodeError:
            log.warning("ignored a Realtime message that is not JSON: %.200r", message)
            return
        kind = event.get("type") if isinstance(event, dict) else None
        handler = self._HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            if kind is None:
                log.warning("ignored a Realtime message without a type: %.200r", message)
            return
        try:
            handler(self, event)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning("ignored a malformed Realtime %s event (%s): %.200r", kind, exc, message)

    def _emit(self, event: PipelineEvent) -> None:
        self._events.put(event)

    def _fail(self, error: BaseException) -> None:
        """The session is over with `error`: start() raises it, or events() does."""
        self._gone = True
        if self._session_ready is not None and not self._session_ready.done():
            self._session_ready.set_exception(error)
        self._events.end(error)

    def _connection_ended(self, exc: ConnectionClosed) -> None:
        """The socket closed: expected once the call or the agent ended it, else the session failed."""
        if self._closed or self._hung_up or self._gone:
            self._gone = True
            self._events.end()
        elif exc.rcvd is None:
            self._fail(PipelineError(f"the connection to the Realtime endpoint {self._url} dropped: {exc}"))
        else:
            self._fail(PipelineError(f"the Realtime endpoint {self._url} closed the session: {exc}"))

    # --- server events --------------------------------------------------------------------------

    def _on_session_updated(self, event: dict[str, Any]) -> None:
        if self._session_ready is not None and not self._session_ready.done():
            self._session_ready.set_result(None)

    def _on_response_created(self, event: dict[str, Any]) -> None:
        self._response_active = True
        response_id = (event.get("response") or {}).get("id")
        self._response_id = response_id if isinstance(response_id, str) else None
        if self._cancel_next and self._response_id:
            self._cancel_next = False
            self._interrupted.add(self._response_id)

    def _on_response_done(self, event: dict[str, Any]) -> None:
        response = event.get("response") or {}
        if response.get("status") == "failed":
            log.warning("a Realtime response failed: %s", response.get("status_details"))
        self._response_active, self._response_id = False, None
        for item in response.get("output") or ():  # function calls not announced by output_item.done
            self._on_item_done(item, response.get("id"))
        self._send_next_request()

    def _on_audio_delta(self, event: dict[str, Any]) -> None:
        item_id = _text(event, "item_id")
        if item_id in self._interrupted or event.get("response_id") in self._interrupted:
            return  # audio of a response the caller already interrupted
        audio = base64.b64decode(_text(event, "delta"), validate=True)
        if audio:
            self._timeline.add(item_id, self._format.duration_ms(len(audio)))
            self._emit(AgentAudio(audio))

    def _on_agent_transcript(self, event: dict[str, Any]) -> None:
        self._emit_transcript("agent", _text(event, "transcript"))

    def _on_user_transcript(self, event: dict[str, Any]) -> None:
        self._emit_transcript("user", _text(event, "transcript"))

    def _emit_transcript(self, role: str, text: str) -> None:
        if text.strip():
            self._emit(Transcript(role, text.strip(), final=True))

    def _on_speech_started(self, event: dict[str, Any]) -> None:
        """Barge-in: drop unheard audio, truncate the item at what was heard, stop the response."""
        self._requests.clear()  # the caller is talking: nothing queued should talk over them
        if not (self._response_active or self._timeline.unheard_ms > 0):
            return
        self._emit(AgentClear())
        cut = self._timeline.interrupt()
        if cut is not None:
            self._interrupted.add(cut.item_id)
            self._send(rt.truncate(cut.item_id, cut.heard_ms))
        if self._response_active:
            if self._response_id:
                self._interrupted.add(self._response_id)
            else:  # requested but not announced yet: the cancel will stop it
                self._cancel_next = True
            self._last_request = None  # whatever becomes of it, it is not to be retried
            self._send(rt.RESPONSE_CANCEL)

    def _on_output_item_done(self, event: dict[str, Any]) -> None:
        self._on_item_done(event["item"], event.get("response_id"))

    def _on_item_done(self, item: dict[str, Any], response_id: Any) -> None:
        """A finished output item: a completed function call (of a response not interrupted) is acted on.

        Not `response.function_call_arguments.done`: it names no function and also comes for
        interrupted and cancelled responses.
        """
        if item.get("type") != "function_call" or item.get("status") not in (None, "completed"):
            return
        if response_id in self._interrupted:
            return
        self._on_function_call(_text(item, "call_id"), _text(item, "name"), _text(item, "arguments"))

    def _on_function_call(self, call_id: str, name: str, arguments: str) -> None:
        """Act on a tool call once (two events carry it), answer it, and maybe ask for a response."""
        if call_id in self._handled_calls or self._hung_up:
            return
        self._handled_calls.add(call_id)
        result = rt.tool_call(name, arguments)
        self._send(rt.function_output(call_id, result.output))
        if result.event is not None:
            log.debug("Realtime tool call %s → %s", name, result.event)
            self._emit(result.event)
        if isinstance(result.event, HangUp):
            self._hung_up = True
            self._requests.clear()
        if result.respond:
            self._request_response()

    def _on_error(self, event: dict[str, Any]) -> None:
        error = event["error"]
        if not isinstance(error, dict):
            raise TypeError("error is not an object")
        if rt.is_fatal(error):
            self._fail(
                PipelineError(f"the Realtime endpoint {self._url} ended the session: {rt.describe(error)}")
            )
            return
        if error.get("code") == "response_cancel_not_active":
            self._cancel_next = False  # the cancel found nothing to stop
        if self._last_request is not None and error.get("event_id") == self._last_request["event_id"]:
            self._request_failed(error)
        level = logging.DEBUG if error.get("code") in rt.ROUTINE_ERROR_CODES else logging.WARNING
        log.log(level, "the Realtime endpoint %s reported %s", self._url, rt.describe(error))

    def _request_failed(self, error: dict[str, Any]) -> None:
        """Our response.create was refused: retry after the active response, or give up on it."""
        assert self._last_request is not None
        if error.get("code") == "conversation_already_has_active_response":
            self._requests.appendleft(self._last_request)
        else:
            self._response_active = False
        self._last_request = None
        self._send_next_request()

    #: Server event type → its handler: the class's functions, not bound methods kept on each instance
    #: (those would make a cycle that only the garbage collector's full pass frees).
    _HANDLERS: ClassVar[dict[str, Callable[[OpenAIRealtimePipeline, dict[str, Any]], None]]] = {
        "session.updated": _on_session_updated,
        "response.created": _on_response_created,
        "response.done": _on_response_done,
        "input_audio_buffer.speech_started": _on_speech_started,
        "conversation.item.input_audio_transcription.completed": _on_user_transcript,
        "response.output_item.done": _on_output_item_done,
        "error": _on_error,
        **dict.fromkeys(AUDIO_DELTA_EVENTS, _on_audio_delta),
        **dict.fromkeys(AGENT_TRANSCRIPT_EVENTS, _on_agent_transcript),
    }

    # --- output and ending ----------------------------------------------------------------------

    def events(self) -> AsyncIterator[PipelineEvent]:
        """The model's audio, barge-ins, transcripts and actions; PipelineError if the session fails."""
        return self._events.iterate()

    async def close(self, reason: str | None = None) -> None:
        """End the session: stop the tasks and close the socket. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._session_ready is not None and not self._session_ready.done():
            self._session_ready.set_result(None)
        for task in (self._sender, self._reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._ws is not None:
            await self._ws.close(CloseCode.NORMAL_CLOSURE, "call ended")
        if self._outbox.dropped_audio:
            log.warning("%d caller audio messages for %s dropped", self._outbox.dropped_audio, self._url)
        self._outbox.clear()
        self._events.end()


def _text(event: dict[str, Any], key: str) -> str:
    """`event[key]`, which must be a string (ValueError otherwise: the event is malformed)."""
    value = event[key]
    if not isinstance(value, str):
        raise ValueError(f"{key} is not a string")
    return value
