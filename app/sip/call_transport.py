"""A SIP call as CallSession sees it: the dialog's signalling plus its RTP stream, as one CallTransport.

Caller audio arrives as RTP payloads (decoded here for G.722 and Opus, whose state lives with the stream);
RFC 4733 events and SIP INFO digits become `StreamDtmf`; the far end's BYE becomes `StreamStop`. Agent audio
leaves as one RTP packet per 20 ms chunk, paced by the session's playout; when the agent stays quiet for
more than half a second the stream carries silence, because PBXs and NAT bindings drop an RTP stream that
goes quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Protocol

from app.calls.transport import CallDataChannel, TransportClosed, TransportEvent
from app.handoff import HandleNow
from app.media.formats import PCMA_8K, PCMU_8K, AudioFormat, pcm16
from app.media.g722 import G722Decoder, G722Encoder
from app.media.opus import SAMPLE_RATE as OPUS_RATE
from app.media.opus import OpusDecoder, OpusEncoder, OpusFmtp
from app.providers.base import OutboundRules, StreamAudio, StreamDtmf, StreamStart, StreamStop
from app.sip.rtp_session import RtpAudio, RtpClosed, RtpDigit, RtpSession
from app.sip.sdp import Negotiated

PACKET_MS = 20
PACKET_S = PACKET_MS / 1000
#: Agent silence longer than this is filled with silent packets (PBXs and NAT bindings drop a stream that
#: stays quiet); shorter pauses are left as gaps.
FILL_AFTER_S = 0.5
#: Further behind than this (the loop stalled), the silence goes on from now instead of in a burst.
MAX_BEHIND_S = 0.1
#: Sent ahead of real time: enough to ride out scheduling jitter, small enough that a far-end jitter buffer
#: does not grow on the bursts.
RTP_LEAD_MS = 40.0
SIP_RULES = OutboundRules(
    chunk_ms=PACKET_MS, pad_partial_chunks=True, marks=False, clear_returns_marks=False, lead_ms=RTP_LEAD_MS
)


class SignallingLeg(Protocol):
    """What the transport needs from the call's SIP signalling (`app.sip.leg.SipLeg`)."""

    call_id: str

    def hang_up(self) -> None:
        """Send BYE (or CANCEL) unless the dialog is already over; never waits for the answer."""
        ...


class PayloadCodec(Protocol):
    """A stateful coder between RTP payloads and the wire format (`wire_format`)."""

    def decode(self, payload: bytes) -> bytes: ...

    def encode(self, pcm: bytes) -> bytes: ...


class _Decoder(Protocol):
    def decode(self, payload: bytes) -> bytes: ...


class _Encoder(Protocol):
    def encode(self, pcm: bytes) -> bytes: ...


class _Transcoder:
    """G.722 or Opus both ways: the session sees 16 kHz L16; the codec's state stays with the stream."""

    def __init__(self, decoder: _Decoder, encoder: _Encoder) -> None:
        self._decoder, self._encoder = decoder, encoder

    def decode(self, payload: bytes) -> bytes:
        return self._decoder.decode(payload)

    def encode(self, pcm: bytes) -> bytes:
        return self._encoder.encode(pcm)


def transcoder_for(codec_name: str, fmtp: str | None = None) -> PayloadCodec | None:
    """The codec state a call needs (None for G.711, which the session speaks as is); Opus's encoder
    follows the far end's `fmtp` (maxplaybackrate, useinbandfec)."""
    if codec_name == "G722":
        return _Transcoder(G722Decoder(), G722Encoder())
    if codec_name == "opus":
        return _Transcoder(OpusDecoder(), OpusEncoder(OpusFmtp.parse(fmtp)))
    return None


def wire_format(codec_name: str) -> AudioFormat:
    """The format the session sees for a negotiated codec (G.711 as is, G.722 and Opus as 16 kHz PCM)."""
    return {"PCMU": PCMU_8K, "PCMA": PCMA_8K, "G722": pcm16(16000), "opus": pcm16(OPUS_RATE)}[codec_name]


class SipCallTransport:
    """One SIP call's far end (CallTransport)."""

    rules: OutboundRules = SIP_RULES
    data: CallDataChannel | None = None

    def __init__(
        self,
        leg: SignallingLeg,
        rtp: RtpSession,
        negotiated: Negotiated,
        rtp_timeout_s: float,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._leg = leg
        self._rtp = rtp
        self._negotiated = negotiated
        self.media_idle_timeout_s: float | None = rtp_timeout_s
        self._rtp_timeout_s = rtp_timeout_s
        self._format = wire_format(negotiated.codec.name)
        self._codec = transcoder_for(negotiated.codec.name, negotiated.fmtp)
        self._silence = self._format.silence(self._format.bytes_for_ms(PACKET_MS))
        self._signals: deque[TransportEvent] = deque()
        self._hung_up_by_far_end = False
        #: What took the call over (`hand_over`): closing then leaves the dialog and the RTP stream to it.
        self.handed_over_to: object | None = None
        self._closed = False
        self._clock = clock or asyncio.get_running_loop().time
        #: When agent audio was last sent (the call's start before any).
        self._last_audio_at = self._clock()
        self._filler: asyncio.Task[None] | None = None

    # --- what the signalling tells the call ----------------------------------------------------

    def far_end_hung_up(self, reason: str) -> None:
        """The far end sent BYE: the next `receive` reports the stream stopped."""
        self._hung_up_by_far_end = True
        self._signals.append(StreamStop(reason))
        self._rtp.close()

    def hold(self, held: bool) -> None:
        """The far end put the call on hold (True) or took it off: a held call sends no RTP (RtpSession
        knows) and may stay silent as long as it likes, so the RTP timeout is suspended meanwhile (the
        session timer still ends a call whose far end is gone)."""
        self.media_idle_timeout_s = None if held else self._rtp_timeout_s

    def hand_over(self, new_owner: object, reason: str) -> None:
        """The call's dialog and RTP stream go to `new_owner` (a bridged transfer): the next `receive`
        reports the stream stopped for `reason`, and `close` sends no BYE and leaves the RTP open."""
        self.handed_over_to = new_owner
        self._rtp.handle_audio_now(None)  # the stream's audio is the new owner's from now on
        self._signals.append(StreamStop(reason))
        self._rtp.wake()

    def signalled_digit(self, digit: str) -> None:
        """A digit from SIP INFO (application/dtmf-relay)."""
        self._signals.append(StreamDtmf(digit))
        self._rtp.wake()

    # --- CallTransport -------------------------------------------------------------------------

    def handle_events_now(self, handler: HandleNow[TransportEvent] | None) -> None:
        """Caller audio to `handler` as each packet arrives, while `receive` waits with nothing queued
        (signals and digits always go through `receive`); None: no more."""
        if handler is None:
            self._rtp.handle_audio_now(None)
            return
        codec = self._codec

        def audio_now(payload: bytes) -> bool:
            if self._signals or self._closed:
                return False
            return handler(StreamAudio(codec.decode(payload) if codec else payload)) is None

        self._rtp.handle_audio_now(audio_now)

    def opening(self) -> StreamStart:
        if self._filler is None:
            self._filler = asyncio.create_task(self._fill_silence(), name=f"sip-{self._leg.call_id}-silence")
        return StreamStart(
            stream_id=self._leg.call_id,
            provider_call_id=self._leg.call_id,
            audio_format=self._format,
        )

    async def receive(self) -> TransportEvent | None:
        if self._signals:
            return self._signals.popleft()
        if self._closed:
            raise TransportClosed("the SIP call is over")
        try:
            item = await self._rtp.receive()
        except RtpClosed:
            if self._signals:
                return self._signals.popleft()
            raise TransportClosed("the RTP stream closed") from None
        if type(item) is RtpAudio:
            payload = item.payload
            return StreamAudio(self._codec.decode(payload) if self._codec else payload)
        if type(item) is RtpDigit:
            return StreamDtmf(item.digit)
        return None  # woken for a signal: it is returned by the next call

    async def send_audio(self, payload: bytes) -> None:
        if not self.send_audio_now(payload):
            raise TransportClosed("the SIP call is over" if self._closed else "the RTP stream closed")

    def send_audio_now(self, payload: bytes) -> bool:
        """`send_audio` without awaiting (the playout's media clock path); False once the call is over,
        where `send_audio` raises TransportClosed."""
        if self._closed:
            return False
        self._last_audio_at = self._clock()
        try:
            self._rtp.send_audio(self._codec.encode(payload) if self._codec else payload)
        except RtpClosed:  # the far end's BYE closed the stream under the playout
            return False
        return True

    async def send_mark(self, name: str) -> None:
        """RTP has no marks (the rules say so); never called."""

    async def send_clear(self) -> None:
        """Nothing to clear: RTP sent is played (at most the lead ahead)."""

    async def send_dtmf(self, digits: str, tone_ms: int) -> bool:
        if self._closed:
            raise TransportClosed("the SIP call is over")
        try:
            return await self._rtp.send_digits(digits, tone_ms, gap_ms=100)
        except RtpClosed:
            raise TransportClosed("the RTP stream closed") from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._filler is not None:
            self._filler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._filler
        if self.handed_over_to is not None:
            return
        if not self._hung_up_by_far_end:
            self._leg.hang_up()
        self._rtp.close()

    # --- silence while the agent says nothing ----------------------------------------------------

    async def _fill_silence(self) -> None:
        """After `FILL_AFTER_S` with no agent audio sent, send silence every 20 ms until the agent speaks.

        Short pauses stay gaps (RTP allows them; the far end's jitter buffer plays them as silence), so a
        silent packet never lands among the agent's words and shifts what follows; long ones are filled
        on an absolute 20 ms cadence (no drift). RtpSession keeps the timestamps on the media clock."""
        try:
            while not self._closed:
                quiet_since = self._last_audio_at
                start = quiet_since + FILL_AFTER_S
                now = self._clock()
                if now < start:
                    await asyncio.sleep(start - now)
                    continue
                sent = 0
                while not self._closed and self._last_audio_at == quiet_since:
                    due = start + sent * PACKET_S
                    now = self._clock()
                    if due > now:
                        await asyncio.sleep(due - now)
                    elif due < now - MAX_BEHIND_S:  # the loop stalled: go on from now, no burst
                        start, sent = now, 0
                    else:
                        silence = self._silence
                        self._rtp.send_audio(self._codec.encode(silence) if self._codec else silence)
                        sent += 1
        except RtpClosed:
            return
