"""A fake Twilio: plays Twilio's side of an incoming call against a running callbridge.

Signed voice webhook → TwiML → signed WebSocket handshake → `connected`/`start` → real-time 20 ms μ-law
`media` → plays back what it receives, answering `mark`s when the audio before them has played and
flushing (returning pending marks) on `clear` → `stop`. Message shapes follow Twilio's Media Streams docs
(every number in `sequenceNumber`, `chunk`, `timestamp` is a string).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import websockets
from twilio.request_validator import RequestValidator

from app.media.codecs import decode_to_pcm16, encode_from_pcm16
from app.media.formats import PCMU_8K
from app.simulator.audio import RoundTrip, measure_round_trip
from app.simulator.playback import PlaybackBuffer

FRAME_MS = 20
FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz
MULAW_SILENCE = b"\xff"


class ProtocolViolation(Exception):
    """callbridge sent something Twilio would reject (the call report would otherwise hide it)."""


class WebhookRejected(Exception):
    """callbridge did not answer the voice webhook with TwiML."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"webhook answered {status}: {body}")
        self.status = status
        self.body = body


@dataclass
class CallScript:
    """What the fake caller does: audio to send (s16le 8 kHz), keys to press, how long to listen after."""

    audio: bytes
    dtmf: list[tuple[float, str]] = field(default_factory=list)  # (seconds into the stream, digit)
    tail_seconds: float = 1.0  # keep the call up (sending silence) after the audio, to hear the echo
    from_number: str = "+15005550006"
    to_number: str = "+15005550001"


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
    call_id: str | None
    call_sid: str
    stream_sid: str
    frames_sent: int
    media_received: int
    received_bytes: int
    marks_received: int
    marks_returned: int
    clears: int
    underrun_ticks: int  # ticks with no agent audio between the first and the last agent audio
    ended_by: str  # "carrier" (we sent stop) or "callbridge" (it closed the stream)
    close_code: int | None
    played: bytes  # s16le 8 kHz: what the caller heard
    round_trip: RoundTrip | None
    mark_names: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"call {self.call_id}  (CallSid {self.call_sid}, stream {self.stream_sid})",
            f"  frames sent {self.frames_sent}, media messages received {self.media_received} "
            f"({self.received_bytes} bytes)",
            f"  marks returned {self.marks_returned}/{self.marks_received}, clears {self.clears}",
            f"  gaps in agent audio: {self.underrun_ticks} x {FRAME_MS} ms",
            f"  ended by {self.ended_by}" + (f" (close code {self.close_code})" if self.close_code else ""),
        ]
        if self.round_trip:
            trip = self.round_trip
            lines.append(f"  round trip: lag {trip.lag_ms:.0f} ms, correlation {trip.correlation:.3f}")
        else:
            lines.append("  round trip: no agent audio came back")
        return "\n".join(lines)


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


class FakeTwilio:
    """One Twilio account that sends calls to `base_url` (callbridge's CALLBRIDGE_PUBLIC_URL)."""

    def __init__(self, base_url: str, account_sid: str, auth_token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.account_sid = account_sid
        self.validator = RequestValidator(auth_token)

    async def voice_webhook(
        self, agent_id: str, params: dict[str, str], *, sign: bool = True, signature: str | None = None
    ) -> httpx.Response:
        """POST the incoming-call webhook as Twilio does (form-encoded, X-Twilio-Signature)."""
        url = f"{self.base_url}/api/agents/{agent_id}/telephony_xml"
        headers = {}
        if sign:
            headers["X-Twilio-Signature"] = signature or self.validator.compute_signature(url, params)
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.post(url, data=params, headers=headers)

    def incoming_params(self, script: CallScript, call_sid: str) -> dict[str, str]:
        return {
            "CallSid": call_sid,
            "AccountSid": self.account_sid,
            "From": script.from_number,
            "To": script.to_number,
            "CallStatus": "ringing",
            "ApiVersion": "2010-04-01",
            "Direction": "inbound",
            "Caller": script.from_number,
            "Called": script.to_number,
        }

    async def call(
        self, agent_id: str, script: CallScript, on_progress: Callable[[Progress], None] | None = None
    ) -> CallReport:
        """Place one incoming call to `agent_id` and run it to the end."""
        call_sid = _sid("CA")
        response = await self.voice_webhook(agent_id, self.incoming_params(script, call_sid))
        if response.status_code != 200:
            raise WebhookRejected(response.status_code, response.text)
        stream_url, parameters = parse_connect_stream(response.text)
        return await self.stream(stream_url, parameters, call_sid, script, on_progress)

    async def stream(
        self,
        url: str,
        parameters: dict[str, str],
        call_sid: str,
        script: CallScript,
        on_progress: Callable[[Progress], None] | None = None,
        *,
        sign: bool = True,
    ) -> CallReport:
        """Open the media stream on `url` (as `<Connect><Stream>` makes Twilio do) and run the call."""
        headers = {"X-Twilio-Signature": self.validator.compute_signature(url, {})} if sign else {}
        async with websockets.connect(url, additional_headers=headers, max_size=2**22) as ws:
            session = _StreamSession(ws, self.account_sid, call_sid, parameters, script, on_progress)
            return await session.run()


def parse_connect_stream(twiml: str) -> tuple[str, dict[str, str]]:
    """(stream URL, `<Parameter>`s) from `<Response><Connect><Stream url>`."""
    root = ET.fromstring(twiml)
    stream = root.find("./Connect/Stream")
    if stream is None or not stream.get("url"):
        raise ValueError(f"TwiML has no <Connect><Stream url>: {twiml}")
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return stream.get("url", ""), params


class _StreamSession:
    """Twilio's end of one bidirectional media stream."""

    def __init__(
        self,
        ws: Any,
        account_sid: str,
        call_sid: str,
        parameters: dict[str, str],
        script: CallScript,
        on_progress: Callable[[Progress], None] | None,
    ) -> None:
        self.ws = ws
        self.account_sid = account_sid
        self.call_sid = call_sid
        self.stream_sid = _sid("MZ")
        self.parameters = parameters
        self.script = script
        self.on_progress = on_progress
        self.sequence = 0
        self.buffer = PlaybackBuffer(MULAW_SILENCE)
        self.progress = Progress()
        self.played = bytearray()
        self.heard_ticks: list[bool] = []
        self.media_received = 0
        self.received_bytes = 0
        self.marks_received = 0
        self.marks_returned = 0
        self.mark_names: list[str] = []
        self.closed_by_peer = asyncio.Event()
        self.violation: ProtocolViolation | None = None

    async def send(self, message: dict[str, Any]) -> None:
        self.sequence += 1
        message = {"event": message.pop("event"), "sequenceNumber": str(self.sequence), **message}
        await self.ws.send(orjson.dumps(message).decode())

    async def run(self) -> CallReport:
        await self.ws.send(
            orjson.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}).decode()
        )
        await self.send(
            {
                "event": "start",
                "streamSid": self.stream_sid,
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": self.parameters,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        )
        receiver = asyncio.create_task(self._receive())
        ended_by = "carrier"
        try:
            await self._send_media()
            if self.closed_by_peer.is_set():
                ended_by = "callbridge"
            else:
                await self.send(
                    {
                        "event": "stop",
                        "streamSid": self.stream_sid,
                        "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
                    }
                )
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

    async def _send_media(self) -> None:
        """Send caller audio (then silence for the tail) every 20 ms of wall-clock time, and play out."""
        audio = encode_from_pcm16(self.script.audio, PCMU_8K)
        total_frames = -(-len(audio) // FRAME_BYTES) + int(self.script.tail_seconds * 1000 / FRAME_MS)
        dtmf = sorted(self.script.dtmf)
        start = time.monotonic()
        for chunk in range(total_frames):
            if self.closed_by_peer.is_set():
                return
            due = start + chunk * FRAME_MS / 1000
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            elapsed = chunk * FRAME_MS / 1000
            while dtmf and dtmf[0][0] <= elapsed:
                await self.send(
                    {
                        "event": "dtmf",
                        "streamSid": self.stream_sid,
                        "dtmf": {"track": "inbound_track", "digit": dtmf.pop(0)[1]},
                    }
                )
            frame = audio[chunk * FRAME_BYTES : (chunk + 1) * FRAME_BYTES]
            frame += MULAW_SILENCE * (FRAME_BYTES - len(frame))
            await self.send(
                {
                    "event": "media",
                    "streamSid": self.stream_sid,
                    "media": {
                        "track": "inbound",
                        "chunk": str(chunk + 1),
                        "timestamp": str(chunk * FRAME_MS),
                        "payload": base64.b64encode(frame).decode(),
                    },
                }
            )
            await self._play_tick()
            self.progress.frames_sent = chunk + 1
            self.progress.elapsed = elapsed
            if self.on_progress and chunk % 50 == 0:
                self.on_progress(self.progress)

    async def _play_tick(self) -> None:
        heard, marks, short = self.buffer.play(FRAME_BYTES)
        self.played += heard
        self.heard_ticks.append(not short)
        for name in marks:
            await self._return_mark(name)

    async def _return_mark(self, name: str) -> None:
        self.marks_returned += 1
        self.progress.marks_returned = self.marks_returned
        await self.send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def _receive(self) -> None:
        try:
            async for raw in self.ws:
                message = orjson.loads(raw)
                event = message.get("event")
                if message.get("streamSid") != self.stream_sid:
                    raise ProtocolViolation(f"message for another stream: {message}")
                if event == "media":
                    payload = base64.b64decode(message["media"]["payload"], validate=True)
                    self.media_received += 1
                    self.received_bytes += len(payload)
                    self.progress.media_received = self.media_received
                    self.buffer.add_audio(payload)
                elif event == "mark":
                    self.marks_received += 1
                    self.progress.marks_sent = self.marks_received
                    name = message["mark"]["name"]
                    self.mark_names.append(name)
                    for returned in self.buffer.add_mark(name):
                        await self._return_mark(returned)
                elif event == "clear":
                    self.progress.clears += 1
                    for returned in self.buffer.clear():
                        await self._return_mark(returned)
                else:
                    raise ProtocolViolation(f"Twilio would reject event {event!r}: {message}")
        except websockets.ConnectionClosed:
            pass
        except (ProtocolViolation, ValueError, KeyError, TypeError) as exc:  # malformed JSON/fields too
            self.violation = exc if isinstance(exc, ProtocolViolation) else ProtocolViolation(repr(exc))
        finally:
            self.closed_by_peer.set()

    def _report(self, ended_by: str) -> CallReport:
        played = decode_to_pcm16(bytes(self.played), PCMU_8K)
        heard = [i for i, h in enumerate(self.heard_ticks) if h]
        underruns = sum(1 for h in self.heard_ticks[heard[0] : heard[-1] + 1] if not h) if heard else 0
        close_code = getattr(self.ws, "close_code", None)
        return CallReport(
            call_id=self.parameters.get("callId"),
            call_sid=self.call_sid,
            stream_sid=self.stream_sid,
            frames_sent=self.progress.frames_sent,
            media_received=self.media_received,
            received_bytes=self.received_bytes,
            marks_received=self.marks_received,
            marks_returned=self.marks_returned,
            clears=self.progress.clears,
            underrun_ticks=underruns,
            ended_by=ended_by,
            close_code=close_code,
            played=played,
            round_trip=measure_round_trip(self.script.audio, played, 8000),
            mark_names=self.mark_names,
        )
