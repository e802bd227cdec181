"""One call's RTP stream: a port pair, symmetric RTP, in-order receive, paced-by-the-caller send, RFC 4733.

Receive: the first packet with a negotiated payload type latches its source as the remote (symmetric RTP,
for callers behind NAT); packets from any other source are dropped until `configure` names a new remote.
A new SSRC from the latched source is a new stream (re-INVITE, PBX re-anchoring): its sequence starts over.

Send: the caller paces `send_audio` (one packet per call). While `send_digits` runs, audio is not sent
(counted in `stats.audio_suppressed`), so an event never shares the timeline with audio; the first audio
packet after the digits, like the first after a pause, carries the marker bit and a timestamp that kept
running with the clock.
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from app.media.dtmf import PAUSE_MS, valid_dtmf_digits
from app.sip import rtcp
from app.sip.ports import BoundPair, RtpPortRange
from app.sip.rtp import RtpPacket, TelephoneEvent, event_for_digit, parse_rtp, parse_telephone_event
from app.sip.rtp_reorder import ReorderBuffer, SequenceStats

COMFORT_NOISE_PT = 13  # RFC 3389, static: ignored on receive
RECEIVE_QUEUE_ITEMS = 50  # one second of 20 ms packets

#: Takes one audio payload at once (True), or leaves it to be queued (False).
AudioNow = Callable[[bytes], bool]
REORDER_DEPTH = 3
REORDER_WAIT_S = 0.06  # a held packet waits at most this long for its missing predecessor
PAUSE_S = 0.1  # sending this far behind the clock is a pause: the timestamp jumps, the marker is set
RTCP_INTERVAL_S = 5.0
EVENT_INTERVAL_MS = 20
EVENT_END_PACKETS = 3  # RFC 4733 §2.5.1.4
EVENT_VOLUME = 10  # -10 dBm0


class RtpClosed(Exception):
    """The session was closed (call ended): no more receiving or sending."""


@dataclass(frozen=True, slots=True)
class RtpAudio:
    """One packet's codec payload (PCMU bytes, G.722 bytes...), in sequence order."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class RtpDigit:
    """One RFC 4733 DTMF event, reported once however many packets carried it."""

    digit: str


RtpEvent = RtpAudio | RtpDigit


@dataclass
class RtpStats:
    """Counters of one session; `sequence` holds the receive side's lost/late/duplicate counts."""

    packets_in: int = 0
    packets_out: int = 0
    octets_out: int = 0
    invalid: int = 0  # not RTP
    unconfigured: int = 0  # arrived before `configure`
    wrong_payload_type: int = 0
    foreign_source: int = 0  # not from the latched remote
    comfort_noise: int = 0
    queue_dropped: int = 0  # the consumer fell behind: oldest audio dropped
    audio_suppressed: int = 0  # send_audio while digits were being sent
    held: int = 0  # packets not sent: the far end put the call on hold (RFC 3264 sendonly/inactive)
    send_errors: int = 0
    rtcp_sr: int = 0
    rtcp_rr: int = 0
    rtcp_bye: int = 0
    rtcp_invalid: int = 0
    sequence: SequenceStats = field(default_factory=SequenceStats)


@dataclass(frozen=True, slots=True)
class _Media:
    remote: tuple[str, int]
    payload_type: int
    clock_rate: int
    dtmf_payload_type: int | None
    samples_per_packet: int
    #: The clock RFC 4733 event durations count in, when it is not `clock_rate` (Opus's 48 kHz stream
    #: with telephone-event/8000); the events' timestamps stay on the stream's clock.
    dtmf_clock_rate: int | None = None
    sends: bool = True

    @property
    def event_clock_rate(self) -> int:
        return self.dtmf_clock_rate or self.clock_rate


class _Receiver(asyncio.DatagramProtocol):
    """Hands each datagram to a callback; ICMP errors (peer not listening yet) are only counted."""

    def __init__(self) -> None:
        self.deliver: Callable[[bytes, tuple[str, int]], None] = lambda data, addr: None
        self.errors = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.deliver(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.errors += 1


class RtpSession:
    """RTP and RTCP for one call on a port pair from an RtpPortRange."""

    def __init__(self, pair: BoundPair, host: str, clock: Callable[[], float] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        # The media clock (timestamps, pauses, last_packet_at); digit pacing always sleeps on the loop.
        self._clock = clock or self._loop.time
        self._pair = pair
        self.local_host = host
        self.local_port = pair.port
        self.stats = RtpStats()
        #: Loop time of the last packet accepted from the remote (or of open/configure before any).
        self.last_packet_at = self._clock()
        self._media: _Media | None = None
        self._latched: tuple[str, int] | None = None
        self._rtcp_remote: tuple[str, int] | None = None
        self._reorder = ReorderBuffer(REORDER_DEPTH)
        self.stats.sequence = self._reorder.stats
        self._reorder_timer: asyncio.TimerHandle | None = None
        self._events_seen: deque[tuple[int, int]] = deque(maxlen=16)
        self._queue: deque[RtpEvent] = deque()
        self._ready = asyncio.Event()
        self._woken = False
        self._waiting = False  # a consumer waits in `receive`
        self._audio_now: AudioNow | None = None
        self._failure: Exception | None = None
        self._closed = False
        # Sending state: timestamps are kept unwrapped and masked when a packet is built.
        self._ssrc = secrets.randbits(32)
        self._sequence = secrets.randbits(16)
        self._next_timestamp = secrets.randbits(32)
        self._anchor: tuple[float, int] | None = None  # (loop time, timestamp) the media clock runs from
        self._marker_pending = True
        self._digits_active = False
        self._digit_lock = asyncio.Lock()
        self._cname = f"{secrets.token_hex(8)}@callbridge"
        self._rtcp_timer: asyncio.TimerHandle | None = None
        self._reported_packets = 0

    @classmethod
    async def open(
        cls, host: str, ports: RtpPortRange, *, clock: Callable[[], float] | None = None
    ) -> RtpSession:
        """Bind an RTP/RTCP port pair on `host` from `ports` (RtpPortsExhausted when none is free)."""
        rtp_receiver, rtcp_receiver = _Receiver(), _Receiver()
        pair = await ports.bind_pair(host, rtp_receiver, rtcp_receiver)
        session = cls(pair, host, clock)
        rtp_receiver.deliver = session._on_rtp
        rtcp_receiver.deliver = session._on_rtcp
        return session

    # -- configuration ------------------------------------------------------------------------------

    def configure(
        self,
        remote_host: str,
        remote_port: int,
        payload_type: int,
        clock_rate: int,
        dtmf_payload_type: int | None,
        samples_per_packet: int,
        dtmf_clock_rate: int | None = None,
        *,
        sends: bool = True,
    ) -> None:
        """Set (or, on a re-INVITE, change) the negotiated media; a new remote address drops the latch.

        `dtmf_clock_rate`: telephone-event's clock when it is not `clock_rate`. `sends` False (a hold):
        nothing is sent until a new `configure` says otherwise; RTCP goes on."""
        previous = self._media
        self._media = _Media(
            (remote_host, remote_port),
            payload_type,
            clock_rate,
            dtmf_payload_type,
            samples_per_packet,
            dtmf_clock_rate,
            sends,
        )
        if previous is None or previous.remote != self._media.remote:
            self._latched = None
            self._rtcp_remote = None
        if previous is None or previous.clock_rate != clock_rate:
            self._anchor = None
            self._marker_pending = True
        self.last_packet_at = self._clock()
        if self._rtcp_timer is None and not self._closed:
            self._schedule_rtcp()

    @property
    def remote(self) -> tuple[str, int] | None:
        """Where packets go: the latched source, else the configured address (None before configure)."""
        if self._latched is not None:
            return self._latched
        return self._media.remote if self._media else None

    @property
    def packets_in(self) -> int:
        return self.stats.packets_in

    @property
    def packets_out(self) -> int:
        return self.stats.packets_out

    @property
    def lost(self) -> int:
        return self._reorder.stats.lost

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def sending_digits(self) -> bool:
        """RFC 4733 events are going out: audio sent now is dropped (stateful encoders should not run)."""
        return self._digits_active

    # -- receiving ----------------------------------------------------------------------------------

    async def receive(self) -> RtpEvent | None:
        """The next audio payload or digit, in sequence order; None once after `wake`.

        Raises RtpClosed once closed.
        """
        while True:
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
            if self._closed:
                raise RtpClosed("RTP session closed")
            if self._woken:
                self._woken = False
                return None
            if self._queue:
                item = self._queue.popleft()
                if not self._queue:
                    self._ready.clear()
                return item
            self._ready.clear()
            self._waiting = True
            try:
                await self._ready.wait()
            finally:
                self._waiting = False

    def handle_audio_now(self, handler: AudioNow | None) -> None:
        """Give each audio payload to `handler` as it arrives while the consumer waits in `receive` with
        nothing queued (no task woken per packet; the order is as queueing would give it). What it does not
        take (False) is queued; an exception from it is raised by the next `receive`. None: always queue."""
        self._audio_now = handler

    def wake(self) -> None:
        """Make the pending (or else the next) `receive` return None: the caller has a signal to read."""
        self._woken = True
        self._ready.set()

    def _on_rtp(self, data: bytes, addr: tuple[str, int]) -> None:
        packet = parse_rtp(data)
        if packet is None:
            self.stats.invalid += 1
            return
        media = self._media
        if media is None:
            self.stats.unconfigured += 1
            return
        pt = packet.payload_type
        if pt != media.payload_type and pt != media.dtmf_payload_type and pt != COMFORT_NOISE_PT:
            self.stats.wrong_payload_type += 1
            return
        source = (addr[0], addr[1])
        if self._latched is None or (source == media.remote and source != self._latched):
            # The first source is latched (symmetric RTP: a caller behind NAT), but the address the
            # SDP named always wins it back: a stray or hostile packet that arrived first (RTP bleed)
            # cannot keep the stream.
            self._latched = source
        elif source != self._latched:
            self.stats.foreign_source += 1
            return
        self.stats.packets_in += 1
        self.last_packet_at = self._clock()
        for ready in self._reorder.push(packet):
            self._dispatch(ready, media)
        self._arm_reorder_timer()

    def _arm_reorder_timer(self) -> None:
        if self._reorder.held and self._reorder_timer is None:
            self._reorder_timer = self._loop.call_later(REORDER_WAIT_S, self._on_reorder_timeout)
        elif not self._reorder.held and self._reorder_timer is not None:
            self._reorder_timer.cancel()
            self._reorder_timer = None

    def _on_reorder_timeout(self) -> None:
        self._reorder_timer = None
        media = self._media
        for ready in self._reorder.flush():
            if media is not None:
                self._dispatch(ready, media)

    def _dispatch(self, packet: RtpPacket, media: _Media) -> None:
        if packet.payload_type == media.payload_type:
            handler = self._audio_now
            if handler is not None and self._waiting and not self._queue and not self._ready.is_set():
                try:
                    if handler(packet.payload):
                        return
                except Exception as exc:  # the consumer's own failure: its next `receive` raises it
                    self._failure = exc
                    self._ready.set()
                    return
            self._enqueue(RtpAudio(packet.payload))
        elif packet.payload_type == media.dtmf_payload_type:
            self._on_telephone_event(packet)
        else:
            self.stats.comfort_noise += 1

    def _on_telephone_event(self, packet: RtpPacket) -> None:
        # Every packet of one event (start, updates, the three end packets) shares its RTP timestamp.
        event = parse_telephone_event(packet.payload)
        key = (packet.ssrc, packet.timestamp)
        if event is None or event.digit is None or key in self._events_seen:
            return
        self._events_seen.append(key)
        self._enqueue(RtpDigit(event.digit))

    def _enqueue(self, item: RtpEvent) -> None:
        if len(self._queue) >= RECEIVE_QUEUE_ITEMS:
            self._drop_oldest_audio()
        self._queue.append(item)
        self._ready.set()

    def _drop_oldest_audio(self) -> None:
        """Make room, sparing digits: a stalled consumer loses stale audio, not the caller's key presses."""
        self.stats.queue_dropped += 1
        for index, queued in enumerate(self._queue):
            if isinstance(queued, RtpAudio):
                del self._queue[index]
                return
        self._queue.popleft()

    # -- sending ------------------------------------------------------------------------------------

    def send_audio(self, payload: bytes) -> None:
        """Send one packet of codec payload (samples_per_packet samples); dropped before configure."""
        if self._closed:
            raise RtpClosed("RTP session closed")
        media = self._media
        if media is None or self._digits_active:
            self.stats.audio_suppressed += 1
            return
        timestamp, marker = self._take_timestamp(media)
        self._send(RtpPacket(media.payload_type, self._sequence, timestamp, self._ssrc, payload, marker))
        self._next_timestamp = timestamp + media.samples_per_packet

    async def send_digits(self, digits: str, tone_ms: int, gap_ms: int) -> bool:
        """Send `digits` as RFC 4733 events, each `tone_ms` long then `gap_ms` quiet; w/W pause.

        False (nothing sent) when no telephone-event payload type was negotiated. ValueError for a
        character that is not a digit or pause; RtpClosed when the session closes meanwhile.
        """
        if self._closed:
            raise RtpClosed("RTP session closed")
        media = self._media
        if media is None or media.dtmf_payload_type is None:
            return False
        normalised = valid_dtmf_digits(digits)
        async with self._digit_lock:
            self._digits_active = True
            try:
                for char in normalised:
                    pause_ms = PAUSE_MS.get(char)
                    if pause_ms is not None:
                        await self._sleep_until(self._loop.time() + pause_ms / 1000.0)
                    else:
                        await self._send_event(media, event_for_digit(char), tone_ms, gap_ms)
            finally:
                self._digits_active = False
                self._marker_pending = True
        return True

    async def _send_event(self, media: _Media, event: int, tone_ms: int, gap_ms: int) -> None:
        """One event: updates every 20 ms with a growing duration, three end packets, then the gap."""
        assert media.dtmf_payload_type is not None
        step = media.event_clock_rate * EVENT_INTERVAL_MS // 1000
        total = min(0xFFFF, max(step, round(tone_ms * media.event_clock_rate / 1000)))
        timestamp, _ = self._take_timestamp(media)
        durations = [*range(step, total, step), total]
        start = self._loop.time()
        interval = EVENT_INTERVAL_MS / 1000.0
        for index, duration in enumerate(durations):
            final = index == len(durations) - 1
            for repeat in range(EVENT_END_PACKETS if final else 1):
                await self._sleep_until(start + (index + repeat) * interval)
                payload = TelephoneEvent(event, final, EVENT_VOLUME, duration).build()
                marker = index == 0 and repeat == 0
                self._send(
                    RtpPacket(media.dtmf_payload_type, self._sequence, timestamp, self._ssrc, payload, marker)
                )
        packets = math.ceil(total * media.clock_rate / media.event_clock_rate / media.samples_per_packet)
        self._next_timestamp = timestamp + packets * media.samples_per_packet
        await self._sleep_until(start + (tone_ms + gap_ms) / 1000.0)

    def _take_timestamp(self, media: _Media) -> tuple[int, bool]:
        """The next packet's timestamp and marker: continuous, or jumped with the clock after a pause."""
        now = self._clock()
        timestamp = self._next_timestamp
        marker = self._marker_pending
        self._marker_pending = False
        if self._anchor is None:
            self._anchor = (now, timestamp)
            return timestamp, True
        anchor_time, anchor_timestamp = self._anchor
        due = anchor_time + (timestamp - anchor_timestamp) / media.clock_rate
        if now - due > PAUSE_S:
            spp = media.samples_per_packet
            elapsed = round((now - anchor_time) * media.clock_rate / spp) * spp
            timestamp = max(timestamp, anchor_timestamp + elapsed)
            self._anchor = (now, timestamp)
            marker = True
        return timestamp, marker

    def _clock_timestamp(self, media: _Media) -> int:
        """The RTP timestamp of this instant on the media clock (for an SR)."""
        if self._anchor is None:
            return self._next_timestamp
        anchor_time, anchor_timestamp = self._anchor
        return anchor_timestamp + round((self._clock() - anchor_time) * media.clock_rate)

    async def _sleep_until(self, deadline: float) -> None:
        delay = deadline - self._loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if self._closed:
            raise RtpClosed("RTP session closed")

    def _send(self, packet: RtpPacket) -> None:
        if self._media is not None and not self._media.sends:
            self.stats.held += 1
            return
        remote = self.remote
        self._sequence = (self._sequence + 1) & 0xFFFF
        if remote is None or self._pair.rtp.is_closing():
            self.stats.send_errors += 1
            return
        self._pair.rtp.sendto(packet.build(), remote)
        self.stats.packets_out += 1
        self.stats.octets_out += len(packet.payload)

    # -- RTCP ---------------------------------------------------------------------------------------

    def _on_rtcp(self, data: bytes, addr: tuple[str, int]) -> None:
        types = rtcp.rtcp_packet_types(data)
        if types is None:
            self.stats.rtcp_invalid += 1
            return
        self._rtcp_remote = (addr[0], addr[1])
        self.stats.rtcp_sr += types.count(rtcp.SR)
        self.stats.rtcp_rr += types.count(rtcp.RR)
        self.stats.rtcp_bye += types.count(rtcp.BYE)

    def _schedule_rtcp(self) -> None:
        # RFC 3550 §6.3.5: randomised around the interval so that streams do not synchronise.
        delay = RTCP_INTERVAL_S * random.uniform(0.5, 1.5)
        self._rtcp_timer = self._loop.call_later(delay, self._send_rtcp)

    def _send_rtcp(self) -> None:
        self._schedule_rtcp()
        media = self._media
        if media is None or self._pair.rtcp.is_closing():
            return
        sender = None
        if self.stats.packets_out > self._reported_packets:
            self._reported_packets = self.stats.packets_out
            sender = rtcp.SenderInfo(
                time.time(), self._clock_timestamp(media), self.stats.packets_out, self.stats.octets_out
            )
        host, port = self.remote or media.remote
        target = self._rtcp_remote or (host, port + 1)
        self._pair.rtcp.sendto(rtcp.build_report(self._ssrc, self._cname, sender), target)

    # -- closing ------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop everything and free the port pair (idempotent); receive/send then raise RtpClosed."""
        if self._closed:
            return
        self._closed = True
        for timer in (self._reorder_timer, self._rtcp_timer):
            if timer is not None:
                timer.cancel()
        self._reorder_timer = self._rtcp_timer = None
        self._pair.close()
        self._queue.clear()
        self._ready.set()
