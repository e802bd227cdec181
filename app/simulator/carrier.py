"""The provider-independent half of the fake carrier: one call's media stream, played like a phone network.

A `CarrierWire` (one per provider, in this package's provider modules) knows the provider's message
shapes and rules. `StreamSession` drives any of them: it sends the caller's audio in real time, plays
back what callbridge sends (answering marks/checkpoints only once the audio before them has played, and
handling `clear` the provider's way), and checks every outbound message against the provider's rules,
raising `ProtocolViolation` for anything the real provider would reject.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import orjson
import websockets

from app.media.codecs import decode_to_pcm16, encode_from_pcm16
from app.media.formats import AudioFormat
from app.media.resample import StreamResampler
from app.simulator.audio import RoundTrip, measure_round_trip, round_trip_line
from app.simulator.playback import PlaybackBuffer


class SetupError(Exception):
    """The simulated call cannot be placed; the message says what to do (exit code 2)."""


class ProtocolViolation(Exception):
    """callbridge sent something the provider would reject (the call report would otherwise hide it)."""


class WebhookRejected(Exception):
    """callbridge did not answer the incoming-call webhook with the provider's XML."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"webhook answered {status}: {body}")
        self.status = status
        self.body = body


@dataclass
class CallScript:
    """What the fake caller does: audio to send (s16le), keys to press, how long to listen after."""

    audio: bytes
    dtmf: list[tuple[float, str]] = field(default_factory=list)  # (seconds into the stream, digit)
    tail_seconds: float = 1.0  # keep the call up (sending silence) after the audio, to hear the echo
    from_number: str = "+15005550006"
    to_number: str = "+15005550001"
    sample_rate: int = 8000  # of `audio`; converted to the stream's rate when they differ
    swap_every: int = 0  # deliver every Nth media frame before the one preceding it (out of order)


@dataclass
class Progress:
    elapsed: float = 0.0
    frames_sent: int = 0
    media_received: int = 0
    marks_sent: int = 0
    marks_returned: int = 0
    clears: int = 0


@dataclass
class CallReport:
    provider: str
    call_id: str | None
    provider_call_id: str
    stream_id: str
    audio_format: AudioFormat
    frames_sent: int
    media_received: int
    received_bytes: int
    marks_received: int
    marks_returned: int
    clears: int
    underrun_ticks: int  # playback ticks with no agent audio between the first and the last agent audio
    ended_by: str  # "carrier" (we ended the stream) or "callbridge" (it closed the stream)
    close_code: int | None
    played: bytes  # s16le at the stream's rate: what the caller heard
    round_trip: RoundTrip | None
    mark_names: list[str] = field(default_factory=list)
    chunk_sizes: set[int] = field(default_factory=set)  # sizes of the audio chunks callbridge sent
    carrier_stalls: int = 0  # times this fake carrier fell behind real time by over a frame (and paused)

    def summary(self) -> str:
        lines = [
            f"call {self.call_id}  ({self.provider} call {self.provider_call_id}, stream {self.stream_id})",
            f"  audio {self.audio_format}",
            f"  frames sent {self.frames_sent}, media messages received {self.media_received} "
            f"({self.received_bytes} bytes)",
            f"  marks returned {self.marks_returned}/{self.marks_received}, clears {self.clears}",
            f"  gaps in agent audio: {self.underrun_ticks} playback ticks"
            + (f" (the simulator itself stalled {self.carrier_stalls}x)" if self.carrier_stalls else ""),
            f"  ended by {self.ended_by}" + (f" (close code {self.close_code})" if self.close_code else ""),
        ]
        lines.append(round_trip_line(self.round_trip))
        return "\n".join(lines)


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def call_id_of(join_url: str) -> str | None:
    """callbridge's call id from a joinUrl (`.../calls/{callId}/stream/{token}`), for reports."""
    parts = urlsplit(join_url).path.strip("/").split("/")
    return parts[parts.index("calls") + 1] if "calls" in parts[:-1] else None


# --- what callbridge sends, as the carrier understands it -------------------------------------


@dataclass(frozen=True, slots=True)
class OutAudio:
    payload: bytes


@dataclass(frozen=True, slots=True)
class OutMark:
    name: str


@dataclass(frozen=True, slots=True)
class OutClear:
    pass


Outbound = OutAudio | OutMark | OutClear


@dataclass(frozen=True, slots=True)
class StreamSetup:
    """What the provider's XML (or the user's console setting) tells the carrier to open."""

    url: str
    audio_format: AudioFormat
    provider_call_id: str
    parameters: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # handshake headers (Twilio signs it)


class CarrierWire(ABC):
    """One provider's stream messages, seen from the carrier's side, for one call."""

    provider: str
    #: How much caller audio each inbound media message carries.
    inbound_frame_ms: int = 20
    #: Whether `clear` hands back the marks still queued (Twilio, Telnyx) or drops them.
    clear_returns_marks: bool = True
    #: How numbered messages name their sequence number and stream, and whether numbers are strings.
    sequence_key: str = "sequence_number"
    stream_key: str = "stream_id"
    numbers_as_text: bool = True
    #: The `track` of caller media (None: the provider sends no track).
    media_track: str | None = "inbound"

    def __init__(self, setup: StreamSetup, account_id: str) -> None:
        self.setup = setup
        self.audio_format = setup.audio_format
        self.account_id = account_id
        self.stream_id = self.new_stream_id()
        self.sequence = 0

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence

    def numbered(self, event: str, **fields: Any) -> dict[str, Any]:
        """A message with the next sequence number and the stream's id, in the provider's spelling."""
        number = self.next_sequence()
        sequence = str(number) if self.numbers_as_text else number
        return {"event": event, self.sequence_key: sequence, self.stream_key: self.stream_id, **fields}

    @abstractmethod
    def new_stream_id(self) -> str: ...

    @abstractmethod
    def opening(self) -> list[dict[str, Any]]:
        """The messages that open the stream (`connected`, `start`)."""

    def media(self, chunk: int, payload: bytes) -> dict[str, Any]:
        """Caller audio message number `chunk` (from 1), timestamped `(chunk-1) * inbound_frame_ms`."""
        media = {
            **({"track": self.media_track} if self.media_track else {}),
            "chunk": str(chunk),
            "timestamp": str((chunk - 1) * self.inbound_frame_ms),
            "payload": base64.b64encode(payload).decode(),
        }
        return self.numbered("media", media=media)

    @abstractmethod
    def dtmf(self, digit: str) -> dict[str, Any]: ...

    def mark_played(self, name: str) -> dict[str, Any]:
        """The message telling callbridge the audio before mark `name` has played."""
        return self.numbered("mark", mark={"name": name})

    def cleared(self) -> list[dict[str, Any]]:
        """Messages answering a clear besides returned marks (Plivo's `clearedAudio`)."""
        return []

    @abstractmethod
    def closing(self) -> dict[str, Any] | None:
        """The message ending the stream (None: the provider just closes the socket)."""

    @abstractmethod
    def parse(self, message: dict[str, Any]) -> Outbound:
        """Check one message from callbridge against the provider's rules (ProtocolViolation if broken)."""


def check(condition: bool, problem: str) -> None:
    """Raise ProtocolViolation(problem) unless `condition` holds."""
    if not condition:
        raise ProtocolViolation(problem)


def decode_strict_base64(text: Any) -> bytes:
    """A payload as the provider decodes it (strictly)."""
    check(isinstance(text, str), f"payload is not a string: {text!r}")
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolViolation(f"payload is not valid base64: {exc}") from None


class StreamSession:
    """The carrier's end of one bidirectional media stream, driven by a provider's `CarrierWire`."""

    def __init__(
        self,
        ws: Any,
        wire: CarrierWire,
        script: CallScript,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.ws = ws
        self.wire = wire
        self.script = script
        self.on_progress = on_progress
        fmt = wire.audio_format
        self.frame_bytes = fmt.bytes_for_ms(wire.inbound_frame_ms)
        self.buffer = PlaybackBuffer(fmt.silence(1))
        self.progress = Progress()
        self.played = bytearray()
        self.heard_ticks: list[bool] = []
        self.media_received = 0
        self.received_bytes = 0
        self.marks_received = 0
        self.marks_returned = 0
        self.mark_names: list[str] = []
        self.chunk_sizes: set[int] = set()
        self.stalls = 0
        self.closed_by_peer = asyncio.Event()
        self.hung_up = asyncio.Event()
        self.violation: ProtocolViolation | None = None
        self.sent_audio = self._script_audio()

    def _script_audio(self) -> bytes:
        """The script's audio at the stream's rate (s16le)."""
        rate = self.wire.audio_format.sample_rate
        if self.script.sample_rate == rate or not self.script.audio:
            return self.script.audio
        return StreamResampler(self.script.sample_rate, rate).process(self.script.audio)

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(message).decode())

    def hang_up(self) -> None:
        """End the call from the carrier's side now (REST hang-up, transfer): closing message, then close."""
        self.hung_up.set()

    async def run(self) -> CallReport:
        for message in self.wire.opening():
            await self.send(message)
        receiver = asyncio.create_task(self._receive())
        ended_by = "carrier"
        try:
            await self._send_media()
            if self.closed_by_peer.is_set():
                ended_by = "callbridge"
            else:
                closing = self.wire.closing()
                if closing is not None:
                    await self.send(closing)
        except websockets.ConnectionClosed:
            ended_by = "callbridge"
        finally:
            with contextlib.suppress(Exception):
                await self.ws.close()
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await receiver
        if self.violation is not None:
            raise self.violation
        return self._report(ended_by)

    def _frames(self) -> list[bytes]:
        """The caller's media payloads in the wire format, silence for the tail."""
        fmt = self.wire.audio_format
        audio = encode_from_pcm16(self.sent_audio, fmt)
        tail = int(self.script.tail_seconds * 1000 / self.wire.inbound_frame_ms)
        count = -(-len(audio) // self.frame_bytes) + tail
        frames = []
        for i in range(count):
            frame = audio[i * self.frame_bytes : (i + 1) * self.frame_bytes]
            frames.append(frame + fmt.silence(self.frame_bytes - len(frame)))
        return frames

    async def _send_media(self) -> None:
        """Send caller audio every frame of wall-clock time, and play out what came back."""
        frames = self._frames()
        dtmf = sorted(self.script.dtmf)
        interval = self.wire.inbound_frame_ms / 1000
        start = time.monotonic()
        held: dict[str, Any] | None = None
        swap = self.script.swap_every
        for index, frame in enumerate(frames):
            if self.closed_by_peer.is_set() or self.hung_up.is_set():
                return
            late = time.monotonic() - (start + index * interval)
            if late > interval:
                # This process stalled (GC, a loaded test machine): a real carrier would not, so pause the
                # call's clock instead of sending a burst and playing silence for ticks that never happened.
                start += late
                self.stalls += 1
            await asyncio.sleep(max(0.0, start + index * interval - time.monotonic()))
            elapsed = index * interval
            while dtmf and dtmf[0][0] <= elapsed:
                await self.send(self.wire.dtmf(dtmf.pop(0)[1]))
            message = self.wire.media(index + 1, frame)
            if swap and (index + 1) % swap == 0 and held is None:
                held = message  # sent after the next one: out of order on the wire
            else:
                await self.send(message)
                if held is not None:
                    await self.send(held)
                    held = None
            await self._play_tick()
            self.progress.frames_sent = index + 1
            self.progress.elapsed = elapsed
            if self.on_progress and index % max(1, int(1 / interval)) == 0:
                self.on_progress(self.progress)
        if held is not None:
            await self.send(held)

    async def _play_tick(self) -> None:
        heard, marks, short = self.buffer.play(self.frame_bytes)
        self.played += heard
        self.heard_ticks.append(not short)
        for name in marks:
            await self._return_mark(name)

    async def _return_mark(self, name: str) -> None:
        self.marks_returned += 1
        self.progress.marks_returned = self.marks_returned
        await self.send(self.wire.mark_played(name))

    async def _receive(self) -> None:
        try:
            async for raw in self.ws:
                check(isinstance(raw, str), "binary frame: providers take JSON text frames only")
                try:
                    message = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    raise ProtocolViolation(f"not JSON: {exc}") from None
                check(isinstance(message, dict), f"not a JSON object: {raw[:80]}")
                await self._handle(self.wire.parse(message))
        except websockets.ConnectionClosed:
            pass
        except (ProtocolViolation, ValueError, KeyError, TypeError) as exc:  # malformed fields too
            self.violation = exc if isinstance(exc, ProtocolViolation) else ProtocolViolation(repr(exc))
        finally:
            self.closed_by_peer.set()

    async def _handle(self, event: Outbound) -> None:
        if isinstance(event, OutAudio):
            self.media_received += 1
            self.received_bytes += len(event.payload)
            self.chunk_sizes.add(len(event.payload))
            self.progress.media_received = self.media_received
            self.buffer.add_audio(event.payload)
        elif isinstance(event, OutMark):
            self.marks_received += 1
            self.progress.marks_sent = self.marks_received
            self.mark_names.append(event.name)
            for returned in self.buffer.add_mark(event.name):
                await self._return_mark(returned)
        else:
            self.progress.clears += 1
            pending = self.buffer.clear()
            if self.wire.clear_returns_marks:
                for returned in pending:
                    await self._return_mark(returned)
            for message in self.wire.cleared():
                await self.send(message)

    def _report(self, ended_by: str) -> CallReport:
        fmt = self.wire.audio_format
        played = decode_to_pcm16(bytes(self.played), fmt)
        heard = [i for i, h in enumerate(self.heard_ticks) if h]
        underruns = sum(1 for h in self.heard_ticks[heard[0] : heard[-1] + 1] if not h) if heard else 0
        return CallReport(
            provider=self.wire.provider,
            call_id=self.wire.setup.parameters.get("callId") or call_id_of(self.wire.setup.url),
            provider_call_id=self.wire.setup.provider_call_id,
            stream_id=self.wire.stream_id,
            audio_format=fmt,
            frames_sent=self.progress.frames_sent,
            media_received=self.media_received,
            received_bytes=self.received_bytes,
            marks_received=self.marks_received,
            marks_returned=self.marks_returned,
            clears=self.progress.clears,
            underrun_ticks=underruns,
            ended_by=ended_by,
            close_code=getattr(self.ws, "close_code", None),
            played=played,
            round_trip=measure_round_trip(self.sent_audio, played, fmt.sample_rate),
            mark_names=self.mark_names,
            chunk_sizes=self.chunk_sizes,
            carrier_stalls=self.stalls,
        )


async def open_stream(
    setup: StreamSetup,
    wire: CarrierWire,
    script: CallScript,
    on_progress: Callable[[Progress], None] | None = None,
    on_session: Callable[[StreamSession], None] | None = None,
) -> CallReport:
    """Connect to `setup.url` as the provider would and run the call to its end.

    `on_session` gets the running session (to hang it up from outside, as a REST hang-up does).
    """
    async with websockets.connect(setup.url, additional_headers=setup.headers, max_size=2**22) as ws:
        session = StreamSession(ws, wire, script, on_progress)
        if on_session is not None:
            on_session(session)
        return await session.run()


class FakeCarrier(ABC):
    """A provider that sends signed incoming-call webhooks to callbridge and opens the stream it is given."""

    provider: str

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def webhook_url(self, agent_id: str, query: str = "") -> str:
        url = f"{self.base_url}/api/agents/{agent_id}/telephony_xml"
        return f"{url}?{query}" if query else url

    @abstractmethod
    def new_call_id(self) -> str: ...

    @abstractmethod
    def incoming_params(self, script: CallScript, provider_call_id: str) -> dict[str, str]:
        """The incoming-call webhook's form fields."""

    @abstractmethod
    def sign(self, url: str, body: bytes, params: dict[str, str]) -> dict[str, str]:
        """The signature headers the provider puts on this webhook."""

    @abstractmethod
    def parse_xml(self, xml: str, provider_call_id: str) -> StreamSetup:
        """What the XML answer tells the provider to open (ProtocolViolation if it would not work)."""

    @abstractmethod
    def wire(self, setup: StreamSetup) -> CarrierWire: ...

    async def webhook(
        self,
        agent_id: str,
        params: dict[str, str],
        *,
        headers: dict[str, str] | None = None,
        query: str = "",
    ) -> httpx.Response:
        """POST the incoming-call webhook, form-encoded and signed (or with `headers` instead)."""
        url = self.webhook_url(agent_id, query)
        body = urlencode(params).encode()
        signed = self.sign(url, body, params) if headers is None else headers
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.post(
                url,
                content=body,
                headers={"content-type": "application/x-www-form-urlencoded", **signed},
            )

    async def answer(self, agent_id: str, script: CallScript) -> StreamSetup:
        """An incoming call's webhook, up to the stream the XML asks for."""
        provider_call_id = self.new_call_id()
        response = await self.webhook(agent_id, self.incoming_params(script, provider_call_id))
        if response.status_code != 200:
            raise WebhookRejected(response.status_code, response.text)
        return self.parse_xml(response.text, provider_call_id)

    async def call(
        self, agent_id: str, script: CallScript, on_progress: Callable[[Progress], None] | None = None
    ) -> CallReport:
        """Place one incoming call to `agent_id` and run it to the end."""
        return await self.run_stream(await self.answer(agent_id, script), script, on_progress)

    async def run_stream(
        self,
        setup: StreamSetup,
        script: CallScript,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> CallReport:
        return await open_stream(setup, self.wire(setup), script, on_progress)
