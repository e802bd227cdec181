"""The `websocket` agent: callbridge dials out to the user's own agent server, one connection per call.

The connection, its supervision and the event queue are shared; what goes over the wire is the framing's
business: `native` (app/pipeline/agent_protocol.py) or `twilio` (app/pipeline/twilio_agent_framing.py).
The protocol is documented for agent authors in docs/agent-protocol.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, WebSocketException
from websockets.frames import CloseCode
from websockets.protocol import State

from app.media.formats import AudioFormat, pcm16
from app.pipeline.agent_protocol import AgentFraming, Message, NativeFraming
from app.pipeline.base import CallInfo, HangUp, Pipeline, PipelineError, PipelineEvent
from app.pipeline.twilio_agent_framing import TwilioAgentFraming
from app.schemas.durations import PositiveDuration

log = logging.getLogger(__name__)

CALL_ID_HEADER = "X-Callbridge-Call-Id"
TIMESTAMP_HEADER = "X-Callbridge-Timestamp"
SIGNATURE_HEADER = "X-Callbridge-Signature"
USER_AGENT = "callbridge"

# Caller audio waiting for a slow agent is bounded (see Outbox): about a second of 20 ms frames.
MAX_QUEUED_AUDIO = 50
# The largest message taken from the agent (about 43 s of 24 kHz PCM, or a long base64 μ-law chunk).
MAX_MESSAGE_BYTES = 4 * 2**20
# On close: how long the last messages (call_ended / stop) may take to go out, then the closing handshake.
FLUSH_TIMEOUT_S = 1.0
CLOSE_TIMEOUT_S = 2.0
# A ping this often; no pong within the same time and the connection counts as dropped.
KEEPALIVE_S = 20.0

_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")
_RESERVED_HEADERS = ("x-callbridge-", "sec-websocket-")
_HANDSHAKE_HEADERS = frozenset({"host", "connection", "upgrade", "content-length", "transfer-encoding"})


class WebSocketOptions(BaseModel):
    """`callTemplate.pipeline.websocket`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    url: str = Field(description="The agent server's websocket URL (ws:// or wss://), dialled once per call")
    framing: Literal["native", "twilio"] = Field(
        default="native",
        description="native: callbridge's protocol (PCM + JSON); twilio: Twilio Media Streams messages",
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Static HTTP headers for the handshake (e.g. Authorization)"
    )
    sample_rate: Literal[8000, 16000, 24000, 48000] = Field(
        default=16000,
        alias="sampleRate",
        description="PCM sample rate both ways (native framing only; twilio is μ-law 8 kHz)",
    )
    secret: str | None = Field(
        default=None, description="Shared secret: the handshake is signed (X-Callbridge-Signature)"
    )
    connect_timeout: PositiveDuration = Field(
        default=5.0, alias="connectTimeout", description="How long connecting to the agent may take"
    )

    @field_validator("url")
    @classmethod
    def _websocket_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError("url must be a ws:// or wss:// URL with a host")
        return url

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            lowered = name.lower()
            if not _HEADER_NAME.match(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP header name")
            if not _HEADER_VALUE.match(value):
                raise ValueError(f"header {name!r}: the value has control characters")
            if lowered in _HANDSHAKE_HEADERS or lowered.startswith(_RESERVED_HEADERS):
                raise ValueError(f"header {name!r} is set by callbridge and cannot be overridden")
        return headers

    @model_validator(mode="after")
    def _sample_rate_is_native(self) -> Self:
        if self.framing == "twilio" and "sample_rate" in self.model_fields_set:
            raise ValueError("sampleRate applies to the native framing only (twilio is μ-law 8 kHz)")
        return self


def handshake_signature(secret: str, timestamp: int, call_id: str) -> str:
    """`X-Callbridge-Signature`: hex HMAC-SHA256 of `"{timestamp}.{callId}"` keyed with the secret."""
    return hmac.new(secret.encode(), f"{timestamp}.{call_id}".encode(), hashlib.sha256).hexdigest()


def shown_url(url: str) -> str:
    """The URL for messages and logs: no credentials, query or fragment (they may hold tokens)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}"


class Outbox:
    """Messages waiting for the agent's socket, written by one sender task so no caller waits on the agent.

    Caller audio is bounded: past `max_audio` audio messages the oldest is dropped (a slow agent hears the
    present, not a growing backlog, and the call loop never blocks). Other messages are never dropped.
    """

    def __init__(self, max_audio: int = MAX_QUEUED_AUDIO) -> None:
        self.max_audio = max_audio
        self.dropped_audio = 0
        #: Set while nothing is waiting: all was written (or the sender stopped and nothing more will be).
        self.drained = asyncio.Event()
        self.drained.set()
        self._items: deque[tuple[Message, bool]] = deque()
        self._audio = 0
        self._ready = asyncio.Event()

    def put(self, messages: Sequence[Message], *, audio: bool = False) -> None:
        """Queue messages (never waits); `audio` marks them as droppable caller audio."""
        if not messages:
            return
        self._items.extend((message, audio) for message in messages)
        if audio:
            self._audio += len(messages)
            while self._audio > self.max_audio:
                self._drop_oldest_audio()
        self.drained.clear()
        self._ready.set()

    def _drop_oldest_audio(self) -> None:
        for index, (_, audio) in enumerate(self._items):
            if audio:
                del self._items[index]
                break
        self._audio -= 1
        self.dropped_audio += 1

    async def get(self) -> Message:
        """The next message to write, waiting for one (the sender has written all before it)."""
        while not self._items:
            self.drained.set()
            self._ready.clear()
            await self._ready.wait()
        message, audio = self._items.popleft()
        if audio:
            self._audio -= 1
        return message

    def clear(self) -> None:
        """Forget everything queued."""
        self._items.clear()
        self._audio = 0
        self.drained.set()


@dataclass(frozen=True, slots=True)
class _End:
    """The end of the agent's events: normal (error None) or a failure, raised from `events()`."""

    error: BaseException | None = None


class WebSocketPipeline(Pipeline):
    """One call's connection to the user's agent server."""

    def __init__(self, options: WebSocketOptions) -> None:
        self.options = options
        self._framing: AgentFraming = (
            TwilioAgentFraming() if options.framing == "twilio" else NativeFraming(pcm16(options.sample_rate))
        )
        self.accepted_formats = (self._framing.audio_format,)
        self._url = shown_url(options.url)
        self._ws: ClientConnection | None = None
        self._events: asyncio.Queue[PipelineEvent | _End] = asyncio.Queue()
        self._outbox = Outbox()
        self._sender: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._agent_gone = False  # the agent closed the connection, or it dropped
        self._agent_hung_up = False
        self._closed = False  # close() has begun: what the agent does from now on is no failure

    @property
    def audio_format(self) -> AudioFormat:
        """The one format this agent hears and speaks (its only accepted format)."""
        return self._framing.audio_format

    # --- starting -------------------------------------------------------------------------------

    async def start(self, info: CallInfo, audio_format: AudioFormat) -> None:
        """Connect to the agent and send the opening messages; PipelineError when the agent is not there."""
        if audio_format != self._framing.audio_format:
            raise ValueError(f"the websocket agent speaks {self._framing.audio_format}, not {audio_format}")
        ws = await self._connect(info.call_id)
        if self._closed:  # the call ended while connecting
            await ws.close()
            return
        self._ws = ws
        try:
            for message in self._framing.opening(info):
                await ws.send(message)
        except ConnectionClosed as exc:
            self._agent_gone = True
            raise PipelineError(f"the agent at {self._url} closed the connection at once: {exc}") from None
        self._sender = asyncio.create_task(self._send_loop(ws), name=f"agent-send-{info.call_id}")
        self._reader = asyncio.create_task(self._read_loop(ws), name=f"agent-read-{info.call_id}")

    async def _connect(self, call_id: str) -> ClientConnection:
        timeout = self.options.connect_timeout
        headers = self._handshake_headers(call_id)
        try:
            return await connect(
                self.options.url,
                additional_headers=headers,
                # A User-Agent among the static headers replaces callbridge's own.
                user_agent_header=None if "user-agent" in {h.lower() for h in headers} else USER_AGENT,
                open_timeout=timeout,
                close_timeout=CLOSE_TIMEOUT_S,
                ping_interval=KEEPALIVE_S,
                ping_timeout=KEEPALIVE_S,
                compression=None,  # audio does not compress; deflate would only cost CPU and latency
                max_size=MAX_MESSAGE_BYTES,
            )
        except TimeoutError:
            raise PipelineError(f"the agent at {self._url} did not answer within {timeout:g}s") from None
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise PipelineError(f"the agent at {self._url} refused the connection (HTTP {status})") from None
        except InvalidHandshake as exc:
            raise PipelineError(f"the websocket handshake with {self._url} failed: {exc}") from None
        except (OSError, WebSocketException) as exc:
            raise PipelineError(f"could not connect to the agent at {self._url}: {exc}") from None

    def _handshake_headers(self, call_id: str) -> dict[str, str]:
        timestamp = int(time.time())
        headers = {
            **self.options.headers,
            CALL_ID_HEADER: call_id,
            TIMESTAMP_HEADER: str(timestamp),
        }
        if self.options.secret:
            headers[SIGNATURE_HEADER] = handshake_signature(self.options.secret, timestamp, call_id)
        return headers

    # --- caller → agent -------------------------------------------------------------------------

    async def send_audio(self, audio: bytes) -> None:
        """Queue caller audio for the agent; never waits (see MAX_QUEUED_AUDIO)."""
        if self._accepting:
            self._enqueue(self._framing.encode_audio(audio), audio=True)

    async def send_dtmf(self, digit: str) -> None:
        """Tell the agent the caller pressed `digit`."""
        if self._accepting:
            self._enqueue([self._framing.encode_dtmf(digit)])

    async def playback_position(self, played_ms: float) -> None:
        """Native: tell the agent how much of its audio was heard. Twilio: return the marks reached."""
        if self._accepting:
            self._enqueue(self._framing.playback_position(played_ms))

    async def send_user_text(self, text: str) -> bool:
        """Inject text as if the user had said it (native `user_text_message`).

        False when it could not be sent: the twilio framing has no such message, or the agent is gone.
        """
        message = self._framing.encode_user_text(text)
        if message is None or not self._accepting:
            return False
        self._enqueue([message])
        return True

    async def speak(self, text: str | None = None, prompt: str | None = None) -> bool:
        """Native: `forced_agent_message` (say `text`) or `agent_prompt`. Twilio framing: cannot (False)."""
        message = self._framing.encode_speak(text, prompt)
        if message is None or not self._accepting:
            return False
        self._enqueue([message])
        return True

    @property
    def _accepting(self) -> bool:
        return self._ws is not None and not self._closed and not self._agent_gone

    def _enqueue(self, messages: Sequence[Message], audio: bool = False) -> None:
        dropped = self._outbox.dropped_audio
        self._outbox.put(messages, audio=audio)
        if dropped == 0 and self._outbox.dropped_audio:
            log.warning("the agent at %s is not keeping up: dropping the oldest caller audio", self._url)

    async def _send_loop(self, ws: ClientConnection) -> None:
        try:
            while True:
                await ws.send(await self._outbox.get())
        except ConnectionClosed:
            pass  # the read loop reports how the connection ended
        finally:
            self._outbox.drained.set()  # nothing more will be written

    # --- agent → bridge -------------------------------------------------------------------------

    async def _read_loop(self, ws: ClientConnection) -> None:
        try:
            while True:
                decoded = self._framing.decode(await ws.recv())
                for event in decoded.events:
                    if isinstance(event, HangUp):
                        self._agent_hung_up = True
                    self._events.put_nowait(event)
                if decoded.replies and self._accepting:
                    self._enqueue(decoded.replies)
        except ConnectionClosed as exc:
            self._agent_gone = True
            self._connection_ended(exc)
        except Exception as exc:  # a bug here must end this call, not leave it silent
            self._agent_gone = True
            self._events.put_nowait(_End(exc))

    def _connection_ended(self, exc: ConnectionClosed) -> None:
        """The agent closed (normal close: it hung up) or the connection dropped (the agent failed)."""
        if self._closed or self._agent_hung_up:
            self._events.put_nowait(_End())
        elif exc.rcvd is not None and exc.rcvd.code == CloseCode.NORMAL_CLOSURE:
            self._agent_hung_up = True
            self._events.put_nowait(HangUp(exc.rcvd.reason or "the agent closed the connection"))
            self._events.put_nowait(_End())
        else:
            self._events.put_nowait(
                _End(PipelineError(f"the connection to the agent at {self._url} dropped: {exc}"))
            )

    async def events(self) -> AsyncIterator[PipelineEvent]:
        """The agent's audio, barge-ins, transcripts and actions; raises PipelineError if the agent fails."""
        while True:
            item = await self._events.get()
            if isinstance(item, _End):
                self._events.put_nowait(item)  # any later reader ends too
                if item.error is not None:
                    raise item.error
                return
            yield item

    # --- ending ---------------------------------------------------------------------------------

    async def close(self, reason: str | None = None) -> None:
        """Send the framing's last messages (native `call_ended`, twilio `stop`), then close the socket.

        `reason` is the call's end reason when the caller knows it; by default `agent_hangup` when the
        agent ended the call, else `unknown`.
        """
        if self._closed:
            return
        ws, still_open = self._ws, self._accepting
        self._closed = True
        if ws is not None and still_open and ws.state is State.OPEN:
            default = "agent_hangup" if self._agent_hung_up else "unknown"
            self._outbox.put(self._framing.closing(reason or default))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_TIMEOUT_S):
                    await self._outbox.drained.wait()
        for task in (self._sender, self._reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if ws is not None:
            await ws.close(CloseCode.NORMAL_CLOSURE, "call ended")
        if self._outbox.dropped_audio:
            log.warning("%d caller audio messages for %s dropped", self._outbox.dropped_audio, self._url)
        self._outbox.clear()
        self._events.put_nowait(_End())
