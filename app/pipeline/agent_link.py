"""The connection to an agent server, shared by the websocket and openaiRealtime pipelines.

Dialling with the same limits and error messages, a bounded outbox written by one sender task, and the
queue of events the agent produces until the connection ends.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, WebSocketException

from app.pipeline.agent_protocol import Message
from app.pipeline.base import AgentAudio, AgentAudioDropped, PipelineError, PipelineEvent

USER_AGENT = "callbridge"
# Caller audio waiting for a slow agent is bounded (see Outbox): about a second of 20 ms frames.
MAX_QUEUED_AUDIO = 50
# The largest message taken from the agent: about 21 s of 24 kHz PCM (16 s as base64 JSON); agents send
# chunks of 20 ms to a few seconds. A larger one drops the connection (close 1009), a pipeline error.
MAX_MESSAGE_BYTES = 2**20
# Agent audio waiting for the call to take it: 20 s of 24 kHz 16-bit PCM (60 s at 8 kHz). An agent running
# further ahead of real time loses its oldest audio (see AgentEvents).
MAX_QUEUED_AGENT_AUDIO_BYTES = 960_000
# How long the closing handshake may take.
CLOSE_TIMEOUT_S = 2.0
# A ping this often; no pong within the same time and the connection counts as dropped.
KEEPALIVE_S = 20.0


def websocket_url(url: str) -> str:
    """Validate an agent's URL: ws:// or wss:// with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError("url must be a ws:// or wss:// URL with a host")
    return url


async def connect_agent(
    url: str, headers: Mapping[str, str], open_timeout_s: float, who: str
) -> ClientConnection:
    """Dial an agent server; any failure is a PipelineError naming `who` (e.g. "the agent at wss://…")."""
    try:
        return await connect(
            url,
            additional_headers=dict(headers),
            # A User-Agent among the given headers replaces callbridge's own.
            user_agent_header=None if "user-agent" in {h.lower() for h in headers} else USER_AGENT,
            open_timeout=open_timeout_s,
            close_timeout=CLOSE_TIMEOUT_S,
            ping_interval=KEEPALIVE_S,
            ping_timeout=KEEPALIVE_S,
            compression=None,  # audio does not compress; deflate would only cost CPU and latency
            max_size=MAX_MESSAGE_BYTES,
        )
    except TimeoutError:
        raise PipelineError(f"{who} did not answer within {open_timeout_s:g}s") from None
    except InvalidStatus as exc:
        raise PipelineError(f"{who} refused the connection (HTTP {exc.response.status_code})") from None
    except InvalidHandshake as exc:
        raise PipelineError(f"the websocket handshake with {shown_url(url)} failed: {exc}") from None
    except (OSError, WebSocketException) as exc:
        raise PipelineError(f"could not connect to {who}: {exc}") from None


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

    async def send_to(self, ws: ClientConnection) -> None:
        """Write queued messages to the agent until its connection closes (the read loop reports how)."""
        try:
            while True:
                await ws.send(await self.get())
        except ConnectionClosed:
            pass
        finally:
            self.drained.set()  # nothing more will be written


@dataclass(frozen=True, slots=True)
class _End:
    error: BaseException | None = None


class AgentEvents:
    """What the agent produced, in order, until `end` (after which every reader stops, or raises).

    Audio waiting to be read is bounded: past `max_audio_bytes` the oldest audio is dropped (never other
    events), `dropped_audio_bytes` counts it, and the first drop of each overrun (an overrun ends when the
    reader has taken everything queued) is reported in the queue itself, as an `AgentAudioDropped`.
    """

    def __init__(self, max_audio_bytes: int = MAX_QUEUED_AGENT_AUDIO_BYTES) -> None:
        self.max_audio_bytes = max_audio_bytes
        self.dropped_audio_bytes = 0
        self._items: deque[PipelineEvent | _End] = deque()
        self._audio_bytes = 0
        self._overrun_dropped = 0
        self._ready = asyncio.Event()

    def put(self, event: PipelineEvent) -> None:
        self._items.append(event)
        if isinstance(event, AgentAudio):
            self._audio_bytes += len(event.audio)
            if self._audio_bytes > self.max_audio_bytes:
                self._drop_oldest_audio()
        self._ready.set()

    def _drop_oldest_audio(self) -> None:
        first = self._overrun_dropped == 0
        kept: deque[PipelineEvent | _End] = deque()
        while self._items and self._audio_bytes > self.max_audio_bytes:
            item = self._items.popleft()
            if isinstance(item, AgentAudio):
                self._audio_bytes -= len(item.audio)
                self._overrun_dropped += len(item.audio)
                self.dropped_audio_bytes += len(item.audio)
            else:
                kept.append(item)
        self._items.extendleft(reversed(kept))
        if first:
            self._items.append(AgentAudioDropped(self._overrun_dropped))

    def end(self, error: BaseException | None = None) -> None:
        """No more events: a normal end (`error` None) or a failure raised to the reader."""
        self._items.append(_End(error))
        self._ready.set()

    async def iterate(self) -> AsyncIterator[PipelineEvent]:
        """The events up to the end; raises the end's error, if it has one."""
        while True:
            while not self._items:
                self._ready.clear()
                await self._ready.wait()
            item = self._items[0]
            if isinstance(item, _End):  # left in place: any later reader ends too
                if item.error is not None:
                    raise item.error
                return
            self._items.popleft()
            if isinstance(item, AgentAudio):
                self._audio_bytes -= len(item.audio)
            if not self._items:
                self._overrun_dropped = 0  # caught up: a later overrun is reported again
            yield item
