"""The simulator phone's audio: caller (or callee) audio out as 20 ms RTP packets in real time, RFC 4733
digits, and what comes back played out tick by tick, as a handset would, for the round-trip analysis."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from app.media.codecs import decode_to_pcm16, encode_from_pcm16
from app.media.formats import PCMA_8K, PCMU_8K, AudioFormat
from app.simulator.playback import PlaybackBuffer
from app.sip.call_transport import transcoder_for
from app.sip.media_setup import point_rtp
from app.sip.rtp_session import RtpAudio, RtpClosed, RtpDigit, RtpSession
from app.sip.sdp import CODECS, Negotiated

PACKET_MS = 20
#: RFC 4733 digits: each event sounds this long, then stays quiet this long (audio pauses meanwhile).
TONE_MS = 100
GAP_MS = 40
_G711: dict[str, AudioFormat] = {"PCMU": PCMU_8K, "PCMA": PCMA_8K}


class PayloadCodec:
    """s16le PCM at the codec's audio rate ↔ RTP payloads, for one call (G.722 and Opus keep state, as
    callbridge's own side of a call does)."""

    def __init__(self, name: str, fmtp: str | None = None) -> None:
        if name not in CODECS:
            raise ValueError(f"the simulator speaks {', '.join(CODECS)}, not {name}")
        self.name = name
        self.sample_rate = CODECS[name].sample_rate
        self._transcoder = transcoder_for(name, fmtp)

    @property
    def pcm_frame_bytes(self) -> int:
        """Bytes of s16le PCM in one packet."""
        return self.sample_rate * PACKET_MS // 1000 * 2

    @property
    def payload_bytes(self) -> int:
        """Bytes of payload in one packet for G.711 (one per sample) and G.722 (one per two samples);
        Opus packets vary."""
        return 8000 * PACKET_MS // 1000

    def encode(self, pcm: bytes) -> bytes:
        if self._transcoder is not None:
            return self._transcoder.encode(pcm)
        return encode_from_pcm16(pcm, _G711[self.name])

    def decode(self, payload: bytes) -> bytes:
        if self._transcoder is not None:
            return self._transcoder.decode(payload)
        return decode_to_pcm16(payload, _G711[self.name])


@dataclass
class MediaScript:
    """What the phone says: audio (s16le at the codec's rate), keys to press, how long to listen after."""

    audio: bytes
    dtmf: list[tuple[float, str]] = field(default_factory=list)  # (seconds into the call, digit)
    tail_seconds: float = 1.5


@dataclass
class MediaResult:
    """What happened on the RTP stream of one call."""

    sent: bytes  # s16le: the audio that went out (frames the digits silenced are zeros)
    played: bytes  # s16le: what the phone heard, one tick per packet sent
    packets_sent: int
    packets_received: int
    lost: int
    underrun_ticks: int  # ticks without agent audio between the first and the last one with it
    digits_sent: list[str]
    digits_received: list[str]
    dtmf_negotiated: bool
    stalls: int  # times the simulator itself fell over a packet behind real time (and paused its clock)


@dataclass
class MediaProgress:
    elapsed: float = 0.0
    packets_sent: int = 0
    packets_received: int = 0


class MediaStream:
    """Runs the audio of one established call on `rtp`, pointed at the far end as `negotiated` says."""

    def __init__(self, rtp: RtpSession, negotiated: Negotiated, script: MediaScript) -> None:
        point_rtp(rtp, negotiated)
        self.rtp = rtp
        self.codec = PayloadCodec(negotiated.codec.name, negotiated.fmtp)
        self.dtmf_negotiated = negotiated.dtmf_payload_type is not None
        self.script = script
        self.progress = MediaProgress()
        self._buffer = PlaybackBuffer(b"\x00")
        self._played = bytearray()
        self._heard: list[bool] = []
        self._digits_received: list[str] = []
        self._digits_sent: list[str] = []

    async def run(
        self, stop: asyncio.Event, on_progress: Callable[[MediaProgress], None] | None = None
    ) -> MediaResult:
        """Send every packet of the script (audio, then the tail's silence) unless `stop` is set first."""
        receiver = asyncio.create_task(self._receive())
        digit_tasks: list[asyncio.Task[None]] = []
        try:
            sent, stalls = await self._send(stop, digit_tasks, on_progress)
        finally:
            for task in digit_tasks:
                task.cancel()
            receiver.cancel()
            await asyncio.gather(receiver, *digit_tasks, return_exceptions=True)
        return self._result(sent, stalls)

    def _frames(self) -> list[bytes]:
        """The PCM of each packet: the audio padded to whole packets, then the tail's silence."""
        size = self.codec.pcm_frame_bytes
        audio = self.script.audio
        audio += bytes(-len(audio) % size)
        audio += bytes(int(self.script.tail_seconds * 1000 / PACKET_MS) * size)
        return [audio[i : i + size] for i in range(0, len(audio), size)]

    async def _send(
        self,
        stop: asyncio.Event,
        digit_tasks: list[asyncio.Task[None]],
        on_progress: Callable[[MediaProgress], None] | None,
    ) -> tuple[bytes, int]:
        sent = bytearray()
        dtmf = sorted(self.script.dtmf)
        interval = PACKET_MS / 1000
        start = time.monotonic()
        stalls = 0
        for index, pcm in enumerate(self._frames()):
            if stop.is_set() or self.rtp.closed:
                break
            late = time.monotonic() - (start + index * interval)
            if late > interval:
                start += late  # this process stalled: pause the call's clock rather than send a burst
                stalls += 1
            await asyncio.sleep(max(0.0, start + index * interval - time.monotonic()))
            elapsed = index * interval
            while dtmf and dtmf[0][0] <= elapsed:
                digit_tasks.append(asyncio.create_task(self._press(dtmf.pop(0)[1])))
                await asyncio.sleep(0)  # let the digit start, so this packet's audio gives way to it
            if self.rtp.sending_digits:
                # The audio gives way to the digit; not encoded either, so G.722's encoder stays in step
                # with the far end's decoder, which never sees this frame.
                sent += bytes(len(pcm))
            else:
                try:
                    self.rtp.send_audio(self.codec.encode(pcm))
                except RtpClosed:
                    break
                sent += pcm
            self._play_tick()
            self.progress.elapsed = elapsed
            self.progress.packets_sent = self.rtp.packets_out
            if on_progress is not None and index % int(1 / interval) == 0:
                on_progress(self.progress)
        return bytes(sent), stalls

    async def _press(self, digit: str) -> None:
        with contextlib.suppress(RtpClosed):
            if await self.rtp.send_digits(digit, TONE_MS, GAP_MS):
                self._digits_sent.append(digit)

    def _play_tick(self) -> None:
        heard, _, short = self._buffer.play(self.codec.pcm_frame_bytes)
        self._played += heard
        self._heard.append(not short)

    async def _receive(self) -> None:
        with contextlib.suppress(RtpClosed):
            while True:
                event = await self.rtp.receive()
                if isinstance(event, RtpAudio):
                    self._buffer.add_audio(self.codec.decode(event.payload))
                    self.progress.packets_received += 1
                elif isinstance(event, RtpDigit):
                    self._digits_received.append(event.digit)

    def _result(self, sent: bytes, stalls: int) -> MediaResult:
        heard = [i for i, h in enumerate(self._heard) if h]
        gaps = sum(1 for h in self._heard[heard[0] : heard[-1] + 1] if not h) if heard else 0
        return MediaResult(
            sent=sent,
            played=bytes(self._played),
            packets_sent=self.rtp.packets_out,
            packets_received=self.rtp.packets_in,
            lost=self.rtp.lost,
            underrun_ticks=gaps,
            digits_sent=list(self._digits_sent),
            digits_received=list(self._digits_received),
            dtmf_negotiated=self.dtmf_negotiated,
            stalls=stalls,
        )
