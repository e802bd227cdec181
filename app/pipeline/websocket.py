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
from collections.abc import AsyncIterator, Sequence
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.protocol import State

from app.media.formats import AudioFormat, pcm16
from app.pipeline.agent_link import AgentEvents, Outbox, connect_agent, shown_url, websocket_url
from app.pipeline.agent_protocol import AgentFraming, Message, NativeFraming
from app.pipeline.base import CallInfo, HangUp, Pipeline, PipelineError, PipelineEvent
from app.pipeline.secret_options import PipelineSecret, revealed
from app.pipeline.twilio_agent_framing import TwilioAgentFraming
from app.schemas.durations import PositiveDuration

log = logging.getLogger(__name__)

CALL_ID_HEADER = "X-Callbridge-Call-Id"
TIMESTAMP_HEADER = "X-Callbridge-Timestamp"
SIGNATURE_HEADER = "X-Callbridge-Signature"

# On close: how long the last messages (call_ended / stop) may take to go out.
FLUSH_TIMEOUT_S = 1.0

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
    headers: dict[str, PipelineSecret] = Field(
        default_factory=dict,
        repr=False,
        description="Static HTTP headers for the handshake (e.g. Authorization); the values are secrets",
    )
    sample_rate: Literal[8000, 16000, 24000, 48000] = Field(
        default=16000,
        alias="sampleRate",
        description="PCM sample rate both ways (native framing only; twilio is μ-law 8 kHz)",
    )
    secret: PipelineSecret | None = Field(
        default=None,
        repr=False,
        description="Shared secret: the handshake is signed (X-Callbridge-Signature)",
    )
    connect_timeout: PositiveDuration = Field(
        default=5.0, alias="connectTimeout", description="How long connecting to the agent may take"
    )

    _websocket_url = field_validator("url")(websocket_url)

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, headers: dict[str, PipelineSecret]) -> dict[str, PipelineSecret]:
        for name, value in headers.items():
            lowered = name.lower()
            if not _HEADER_NAME.match(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP header name")
            if isinstance(value, str) and not _HEADER_VALUE.match(value):
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
        self._events = AgentEvents()
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
        self._sender = asyncio.create_task(self._outbox.send_to(ws), name=f"agent-send-{info.call_id}")
        self._reader = asyncio.create_task(self._read_loop(ws), name=f"agent-read-{info.call_id}")

    async def _connect(self, call_id: str) -> ClientConnection:
        headers = self._handshake_headers(call_id)
        return await connect_agent(
            self.options.url, headers, self.options.connect_timeout, f"the agent at {self._url}"
        )

    def _handshake_headers(self, call_id: str) -> dict[str, str]:
        timestamp = int(time.time())
        headers = {
            **{name: revealed(value) for name, value in self.options.headers.items()},
            CALL_ID_HEADER: call_id,
            TIMESTAMP_HEADER: str(timestamp),
        }
        if self.options.secret:
            headers[SIGNATURE_HEADER] = handshake_signature(revealed(self.options.secret), timestamp, call_id)
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

    # --- agent → bridge -------------------------------------------------------------------------

    async def _read_loop(self, ws: ClientConnection) -> None:
        try:
            while True:
                decoded = self._framing.decode(await ws.recv())
                for event in decoded.events:
                    if isinstance(event, HangUp):
                        self._agent_hung_up = True
                    self._events.put(event)
                if decoded.replies and self._accepting:
                    self._enqueue(decoded.replies)
        except ConnectionClosed as exc:
            self._agent_gone = True
            self._connection_ended(exc)
        except Exception as exc:  # a bug here must end this call, not leave it silent
            self._agent_gone = True
            self._events.end(exc)

    def _connection_ended(self, exc: ConnectionClosed) -> None:
        """The agent closed (normal close: it hung up) or the connection dropped (the agent failed)."""
        if self._closed or self._agent_hung_up:
            self._events.end()
        elif exc.rcvd is not None and exc.rcvd.code == CloseCode.NORMAL_CLOSURE:
            self._agent_hung_up = True
            self._events.put(HangUp(exc.rcvd.reason or "the agent closed the connection"))
            self._events.end()
        else:
            self._events.end(PipelineError(f"the connection to the agent at {self._url} dropped: {exc}"))

    def events(self) -> AsyncIterator[PipelineEvent]:
        """The agent's audio, barge-ins, transcripts and actions; raises PipelineError if the agent fails."""
        return self._events.iterate()

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
        self._events.end()
