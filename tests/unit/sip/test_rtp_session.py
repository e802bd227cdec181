"""RtpSession and RtpPortRange on real loopback sockets: latching, ordering, RFC 4733 both ways, ports."""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from app.sip import rtp_session
from app.sip.ports import RtpPortRange, RtpPortsExhausted
from app.sip.rtcp import rtcp_packet_types
from app.sip.rtp import RtpPacket, TelephoneEvent, parse_rtp, parse_telephone_event
from app.sip.rtp_session import (
    RECEIVE_QUEUE_ITEMS,
    RtpAudio,
    RtpClosed,
    RtpDigit,
    RtpSession,
)

HOST = "127.0.0.1"
TIMEOUT = 2.0
PCMU = 0
DTMF = 101
SSRC = 0x1234


class Peer(asyncio.DatagramProtocol):
    """The far end: sends crafted packets to the session and collects what the session sends."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: Python 3.11's selector datagram transport is no DatagramTransport.
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(data)

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[:2]

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, (HOST, port))

    async def next_packet(self) -> RtpPacket:
        packet = parse_rtp(await asyncio.wait_for(self.received.get(), TIMEOUT))
        assert packet is not None
        return packet

    async def packets(self, count: int) -> list[RtpPacket]:
        return [await self.next_packet() for _ in range(count)]


def audio(sequence: int, payload: bytes | None = None, *, ssrc: int = SSRC, pt: int = PCMU) -> bytes:
    body = payload if payload is not None else bytes([sequence & 0xFF]) * 160
    return RtpPacket(pt, sequence, sequence * 160, ssrc, body).build()


def event(
    digit_event: int, timestamp: int, sequence: int, *, end: bool = False, duration: int = 160
) -> bytes:
    payload = TelephoneEvent(digit_event, end, 10, duration).build()
    return RtpPacket(DTMF, sequence, timestamp, SSRC, payload, marker=not end and duration == 160).build()


async def next_item(session: RtpSession) -> RtpAudio | RtpDigit | None:
    return await asyncio.wait_for(session.receive(), TIMEOUT)


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) for `condition` to hold: the session handles datagrams as they arrive."""
    async with asyncio.timeout(TIMEOUT):
        while not condition():  # noqa: ASYNC110 - counters have no event to wait on
            await asyncio.sleep(0.002)


@pytest.fixture
def ports() -> RtpPortRange:
    base = random.randrange(30000, 60000, 2)
    return RtpPortRange(base, base + 9)


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Peer, local_addr=(HOST, 0))
    yield protocol
    transport.close()


@pytest.fixture
async def session(ports: RtpPortRange, peer: Peer) -> AsyncIterator[RtpSession]:
    rtp = await RtpSession.open(HOST, ports)
    rtp.configure(*peer.address, PCMU, 8000, DTMF, 160)
    yield rtp
    rtp.close()


@pytest.fixture
def occupied() -> Iterator[Callable[[int], None]]:
    sockets: list[socket.socket] = []

    def occupy(port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((HOST, port))
        sockets.append(sock)

    yield occupy
    for sock in sockets:
        sock.close()


# -- ports ------------------------------------------------------------------------------------------


def test_a_port_range_parses_from_first_dash_last() -> None:
    ports = RtpPortRange.parse("10000-20000")

    assert (ports.first, ports.last) == (10000, 20000)


def test_an_odd_first_port_moves_up_to_the_next_even_one() -> None:
    assert RtpPortRange.parse("10001-10010").first == 10002


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("10000", "look like 10000-20000"),
        ("ten-twenty", "look like 10000-20000"),
        ("-5-10", "look like 10000-20000"),
        ("20000-10000", "starts after it ends"),
        ("80-2000", "must be 1024-65535"),
        ("10000-70000", "must be 1024-65535"),
        ("10000-10000", "no even port"),
    ],
)
def test_a_malformed_port_range_is_refused_with_the_reason(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RtpPortRange.parse(spec)


async def test_a_session_binds_an_even_rtp_port_and_rtcp_on_the_next(ports: RtpPortRange) -> None:
    rtp = await RtpSession.open(HOST, ports)
    try:
        assert rtp.local_port % 2 == 0
        with pytest.raises(OSError):
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind((HOST, rtp.local_port + 1))
    finally:
        rtp.close()


async def test_a_port_in_use_by_someone_else_is_skipped(
    ports: RtpPortRange, occupied: Callable[[int], None]
) -> None:
    occupied(ports.first)
    rtp = await RtpSession.open(HOST, ports)
    rtp.close()

    assert rtp.local_port == ports.first + 2


async def test_a_pair_whose_rtcp_port_is_in_use_is_skipped(
    ports: RtpPortRange, occupied: Callable[[int], None]
) -> None:
    occupied(ports.first + 1)
    rtp = await RtpSession.open(HOST, ports)
    rtp.close()

    assert rtp.local_port == ports.first + 2


async def test_closing_releases_the_port_for_the_next_turn_of_the_range() -> None:
    base = random.randrange(30000, 60000, 2)
    ports = RtpPortRange(base, base + 3)  # two pairs
    first = await RtpSession.open(HOST, ports)
    second = await RtpSession.open(HOST, ports)
    first.close()
    await until(lambda: ports.in_use == 1)  # the sockets close on the next loop turn
    third = await RtpSession.open(HOST, ports)  # wraps around to the released pair
    second.close()
    third.close()

    assert (first.local_port, second.local_port, third.local_port) == (base, base + 2, base)
    await until(lambda: ports.in_use == 0)


async def test_a_full_range_raises_ports_exhausted() -> None:
    base = random.randrange(30000, 60000, 2)
    ports = RtpPortRange(base, base + 1)
    only = await RtpSession.open(HOST, ports)
    try:
        with pytest.raises(RtpPortsExhausted):
            await RtpSession.open(HOST, ports)
    finally:
        only.close()


async def test_concurrent_opens_get_distinct_ports(ports: RtpPortRange) -> None:
    sessions = await asyncio.gather(*(RtpSession.open(HOST, ports) for _ in range(5)))
    for rtp in sessions:
        rtp.close()

    assert len({rtp.local_port for rtp in sessions}) == 5


# -- receiving --------------------------------------------------------------------------------------


async def test_audio_from_the_peer_comes_out_as_its_payload(session: RtpSession, peer: Peer) -> None:
    peer.send(audio(1, b"hello"), session.local_port)

    assert await next_item(session) == RtpAudio(b"hello")
    assert session.packets_in == 1


async def test_the_first_source_is_latched_as_the_remote(ports: RtpPortRange, peer: Peer) -> None:
    rtp = await RtpSession.open(HOST, ports)
    try:
        rtp.configure(HOST, 9, PCMU, 8000, DTMF, 160)  # the SDP says port 9; the packets come from the peer
        peer.send(audio(1), rtp.local_port)
        await next_item(rtp)
        rtp.send_audio(b"\xff" * 160)

        assert (await peer.next_packet()).payload == b"\xff" * 160
        assert rtp.remote == peer.address
    finally:
        rtp.close()


async def test_packets_from_another_source_after_latching_are_dropped(
    session: RtpSession, peer: Peer
) -> None:
    loop = asyncio.get_running_loop()
    intruder_transport, intruder = await loop.create_datagram_endpoint(Peer, local_addr=(HOST, 0))
    try:
        peer.send(audio(1, b"caller"), session.local_port)
        assert await next_item(session) == RtpAudio(b"caller")
        intruder.send(audio(2, b"intruder"), session.local_port)
        await until(lambda: session.stats.foreign_source == 1)
        peer.send(audio(2, b"caller again"), session.local_port)

        assert await next_item(session) == RtpAudio(b"caller again")
    finally:
        intruder_transport.close()


async def test_the_address_the_sdp_named_wins_the_stream_back_from_a_stray_first_source(
    session: RtpSession, peer: Peer
) -> None:
    loop = asyncio.get_running_loop()
    stray_transport, stray = await loop.create_datagram_endpoint(Peer, local_addr=(HOST, 0))
    try:
        stray.send(audio(1, b"stray"), session.local_port)  # first: latched
        assert await next_item(session) == RtpAudio(b"stray")
        peer.send(audio(2, b"caller"), session.local_port)  # the session's SDP names the peer

        assert await next_item(session) == RtpAudio(b"caller")
        assert session.remote == peer.address
    finally:
        stray_transport.close()


async def test_packets_before_configure_are_dropped(ports: RtpPortRange, peer: Peer) -> None:
    rtp = await RtpSession.open(HOST, ports)
    try:
        peer.send(audio(1), rtp.local_port)
        await until(lambda: rtp.stats.unconfigured == 1)
        rtp.configure(*peer.address, PCMU, 8000, DTMF, 160)
        peer.send(audio(2, b"now"), rtp.local_port)

        assert await next_item(rtp) == RtpAudio(b"now")
    finally:
        rtp.close()


async def test_out_of_order_packets_come_out_in_sequence(session: RtpSession, peer: Peer) -> None:
    for sequence in (10, 12, 11, 13):
        peer.send(audio(sequence), session.local_port)

    payloads = [await next_item(session) for _ in range(4)]

    assert payloads == [RtpAudio(bytes([s]) * 160) for s in (10, 11, 12, 13)]
    assert session.lost == 0


async def test_a_duplicate_packet_is_dropped(session: RtpSession, peer: Peer) -> None:
    for sequence in (1, 2, 2, 3):
        peer.send(audio(sequence), session.local_port)

    payloads = [await next_item(session) for _ in range(3)]
    await until(lambda: session.packets_in == 4)

    assert payloads == [RtpAudio(bytes([s]) * 160) for s in (1, 2, 3)]
    assert session.stats.sequence.duplicates == 1


async def test_more_than_three_held_packets_give_up_on_the_missing_one(
    session: RtpSession, peer: Peer
) -> None:
    for sequence in (1, 3, 4, 5, 6):
        peer.send(audio(sequence), session.local_port)

    payloads = [await next_item(session) for _ in range(5)]

    assert payloads == [RtpAudio(bytes([s]) * 160) for s in (1, 3, 4, 5, 6)]
    assert session.lost == 1


async def test_a_packet_arriving_after_its_turn_is_dropped_as_late(session: RtpSession, peer: Peer) -> None:
    for sequence in (1, 3, 4, 5, 6, 2, 7):
        peer.send(audio(sequence), session.local_port)

    payloads = [await next_item(session) for _ in range(6)]

    assert payloads[-1] == RtpAudio(bytes([7]) * 160)
    assert session.stats.sequence.late == 1


async def test_a_held_packet_is_released_when_its_predecessor_never_comes(
    session: RtpSession, peer: Peer
) -> None:
    peer.send(audio(1), session.local_port)
    peer.send(audio(3), session.local_port)

    assert await next_item(session) == RtpAudio(bytes([1]) * 160)
    assert await next_item(session) == RtpAudio(bytes([3]) * 160)
    assert session.lost == 1


async def test_a_new_ssrc_starts_a_new_sequence(session: RtpSession, peer: Peer) -> None:
    peer.send(audio(500, b"old"), session.local_port)
    peer.send(audio(7, b"new", ssrc=0x9999), session.local_port)
    peer.send(audio(8, b"new 2", ssrc=0x9999), session.local_port)

    payloads = [await next_item(session) for _ in range(3)]

    assert payloads == [RtpAudio(b"old"), RtpAudio(b"new"), RtpAudio(b"new 2")]
    assert session.stats.sequence.ssrc_changes == 1
    assert session.lost == 0


async def test_a_payload_type_not_negotiated_is_dropped_and_counted(session: RtpSession, peer: Peer) -> None:
    peer.send(audio(1, pt=8), session.local_port)
    peer.send(audio(2, b"pcmu"), session.local_port)

    assert await next_item(session) == RtpAudio(b"pcmu")
    assert session.stats.wrong_payload_type == 1


async def test_comfort_noise_is_ignored(session: RtpSession, peer: Peer) -> None:
    peer.send(audio(1, b"\x40", pt=13), session.local_port)
    peer.send(audio(2, b"speech"), session.local_port)

    assert await next_item(session) == RtpAudio(b"speech")
    assert session.stats.comfort_noise == 1


async def test_garbage_on_the_port_is_ignored(session: RtpSession, peer: Peer) -> None:
    peer.send(b"\x00\x01 not rtp", session.local_port)
    peer.send(audio(1, b"real"), session.local_port)

    assert await next_item(session) == RtpAudio(b"real")
    assert session.stats.invalid == 1


async def test_a_stalled_consumer_loses_the_oldest_audio(session: RtpSession, peer: Peer) -> None:
    sent = RECEIVE_QUEUE_ITEMS + 5
    for sequence in range(sent):
        peer.send(audio(sequence), session.local_port)
    await until(lambda: session.packets_in == sent)

    assert await next_item(session) == RtpAudio(bytes([5]) * 160)
    assert session.stats.queue_dropped == 5


async def test_last_packet_at_moves_with_each_packet(session: RtpSession, peer: Peer) -> None:
    before = session.last_packet_at
    peer.send(audio(1), session.local_port)
    await next_item(session)

    assert session.last_packet_at >= before
    assert session.last_packet_at <= asyncio.get_running_loop().time()


async def test_wake_makes_a_pending_receive_return_none(session: RtpSession) -> None:
    pending = asyncio.ensure_future(session.receive())
    await asyncio.sleep(0)
    session.wake()

    assert await asyncio.wait_for(pending, TIMEOUT) is None


async def test_receive_raises_rtp_closed_once_closed(session: RtpSession) -> None:
    pending = asyncio.ensure_future(session.receive())
    await asyncio.sleep(0)
    session.close()

    with pytest.raises(RtpClosed):
        await asyncio.wait_for(pending, TIMEOUT)


# -- RFC 4733 in ------------------------------------------------------------------------------------


async def test_an_event_with_updates_and_three_end_packets_is_one_digit(
    session: RtpSession, peer: Peer
) -> None:
    packets = [event(5, 8000, 1, duration=160), event(5, 8000, 2, duration=320)]
    packets += [event(5, 8000, sequence, end=True, duration=480) for sequence in (3, 4, 5)]
    for data in packets:
        peer.send(data, session.local_port)
    peer.send(audio(6, b"after"), session.local_port)

    assert await next_item(session) == RtpDigit("5")
    assert await next_item(session) == RtpAudio(b"after")


async def test_an_event_whose_start_was_lost_is_reported_on_its_end(session: RtpSession, peer: Peer) -> None:
    for sequence in (1, 2, 3):
        peer.send(event(11, 8000, sequence, end=True, duration=800), session.local_port)
    peer.send(audio(4, b"after"), session.local_port)

    assert await next_item(session) == RtpDigit("#")
    assert await next_item(session) == RtpAudio(b"after")


async def test_two_events_are_two_digits(session: RtpSession, peer: Peer) -> None:
    peer.send(event(1, 8000, 1), session.local_port)
    peer.send(event(1, 8000, 2, end=True, duration=800), session.local_port)
    peer.send(event(2, 9600, 3), session.local_port)
    peer.send(event(2, 9600, 4, end=True, duration=800), session.local_port)

    assert [await next_item(session) for _ in range(2)] == [RtpDigit("1"), RtpDigit("2")]


# -- sending ----------------------------------------------------------------------------------------


async def test_sent_audio_advances_sequence_by_one_and_timestamp_by_a_packet(
    session: RtpSession, peer: Peer
) -> None:
    for _ in range(3):
        session.send_audio(b"\xff" * 160)

    first, second, third = await peer.packets(3)

    assert [p.sequence for p in (second, third)] == [(first.sequence + n) % 65536 for n in (1, 2)]
    assert [p.timestamp for p in (second, third)] == [(first.timestamp + n) % 2**32 for n in (160, 320)]
    assert [p.marker for p in (first, second, third)] == [True, False, False]
    assert {p.payload_type for p in (first, second, third)} == {PCMU}
    assert session.packets_out == 3


async def test_the_first_packet_after_a_pause_has_the_marker_and_a_timestamp_that_kept_running(
    ports: RtpPortRange, peer: Peer
) -> None:
    now = [100.0]
    rtp = await RtpSession.open(HOST, ports, clock=lambda: now[0])
    try:
        rtp.configure(*peer.address, PCMU, 8000, DTMF, 160)
        rtp.send_audio(b"a")
        now[0] += 0.02
        rtp.send_audio(b"b")
        now[0] += 1.02  # one second with nothing sent
        rtp.send_audio(b"c")

        first, second, third = await peer.packets(3)

        assert (second.marker, third.marker) == (False, True)
        assert (third.timestamp - first.timestamp) % 2**32 == 8320  # 1.04 s after the first, at 8 kHz
        assert third.sequence == (second.sequence + 1) % 65536
    finally:
        rtp.close()


async def test_send_digits_sends_rfc_4733_events(session: RtpSession, peer: Peer) -> None:
    assert await session.send_digits("7", tone_ms=60, gap_ms=40)

    packets = await peer.packets(5)
    events = [parse_telephone_event(p.payload) for p in packets]

    assert {p.payload_type for p in packets} == {DTMF}
    assert len({p.timestamp for p in packets}) == 1
    assert [p.marker for p in packets] == [True, False, False, False, False]
    assert events == [
        TelephoneEvent(7, False, 10, 160),
        TelephoneEvent(7, False, 10, 320),
        TelephoneEvent(7, True, 10, 480),
        TelephoneEvent(7, True, 10, 480),
        TelephoneEvent(7, True, 10, 480),
    ]
    assert [(b.sequence - a.sequence) % 65536 for a, b in itertools.pairwise(packets)] == [1] * 4


async def test_events_at_8_khz_beside_a_48_khz_stream_count_their_duration_at_8_khz(
    ports: RtpPortRange, peer: Peer
) -> None:
    rtp = await RtpSession.open(HOST, ports, clock=lambda: 100.0)  # the media clock stands still: no jumps
    try:
        rtp.configure(*peer.address, 96, 48000, DTMF, 960, dtmf_clock_rate=8000)  # Opus, telephone-event/8000
        assert await rtp.send_digits("7", tone_ms=60, gap_ms=40)
        rtp.send_audio(b"opus")
        packets = await peer.packets(6)
    finally:
        rtp.close()
    events = [parse_telephone_event(p.payload) for p in packets[:5]]
    assert [event.duration for event in events] == [160, 320, 480, 480, 480]  # type: ignore[union-attr]
    assert (packets[5].timestamp - packets[0].timestamp) % 2**32 == 3 * 960  # 60 ms on the 48 kHz clock


async def test_each_digit_is_its_own_event_with_its_own_timestamp(session: RtpSession, peer: Peer) -> None:
    await session.send_digits("12", tone_ms=40, gap_ms=40)

    packets = await peer.packets(8)  # per digit: one update, three end packets

    assert [parse_telephone_event(p.payload).event for p in packets] == [1] * 4 + [2] * 4  # type: ignore[union-attr]
    assert packets[0].timestamp != packets[4].timestamp
    assert (packets[0].marker, packets[4].marker) == (True, True)


async def test_send_digits_without_telephone_event_returns_false(ports: RtpPortRange, peer: Peer) -> None:
    rtp = await RtpSession.open(HOST, ports)
    try:
        rtp.configure(*peer.address, PCMU, 8000, None, 160)

        assert await rtp.send_digits("1", tone_ms=60, gap_ms=40) is False
        assert rtp.packets_out == 0
    finally:
        rtp.close()


async def test_audio_is_held_back_while_digits_are_sent(session: RtpSession, peer: Peer) -> None:
    session.send_audio(b"before")
    digits = asyncio.ensure_future(session.send_digits("1", tone_ms=40, gap_ms=40))
    await asyncio.sleep(0)
    session.send_audio(b"during")
    await digits
    session.send_audio(b"after")

    packets = await peer.packets(6)  # before, one update, three end packets, after

    assert [p.payload for p in (packets[0], packets[5])] == [b"before", b"after"]
    assert {p.payload_type for p in packets[1:5]} == {DTMF}
    assert packets[5].marker
    assert (packets[5].timestamp - packets[1].timestamp) % 2**32 >= 320
    assert session.stats.audio_suppressed == 1


async def test_send_digits_refuses_a_character_that_is_no_digit(session: RtpSession) -> None:
    with pytest.raises(ValueError, match="not a DTMF digit"):
        await session.send_digits("1x", tone_ms=40, gap_ms=40)


async def test_sending_after_close_raises_rtp_closed(session: RtpSession) -> None:
    session.close()

    with pytest.raises(RtpClosed):
        session.send_audio(b"late")


# -- RTCP -------------------------------------------------------------------------------------------


async def test_incoming_rtcp_reports_and_bye_are_counted(session: RtpSession, peer: Peer) -> None:
    receiver_report = struct.pack("!BBHI", 0x80, 201, 1, SSRC)
    bye = struct.pack("!BBHI", 0x81, 203, 1, SSRC)
    peer.send(receiver_report + bye, session.local_port + 1)

    await until(lambda: session.stats.rtcp_bye == 1)
    assert session.stats.rtcp_rr == 1


async def test_garbage_on_the_rtcp_port_is_counted_and_ignored(session: RtpSession, peer: Peer) -> None:
    peer.send(b"\x80\xc9\x00\x07short", session.local_port + 1)

    await until(lambda: session.stats.rtcp_invalid == 1)
    assert session.stats.rtcp_rr == 0


async def test_a_receiver_report_goes_to_where_the_peer_sends_rtcp_from(
    ports: RtpPortRange, peer: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rtp_session, "RTCP_INTERVAL_S", 0.01)
    rtp = await RtpSession.open(HOST, ports)
    try:
        rtp.configure(*peer.address, PCMU, 8000, DTMF, 160)
        peer.send(struct.pack("!BBHI", 0x80, 201, 1, SSRC), rtp.local_port + 1)

        report = await asyncio.wait_for(peer.received.get(), TIMEOUT)

        assert rtcp_packet_types(report) == [201, 202]  # RR (nothing sent yet), SDES
    finally:
        rtp.close()


# -- handing audio over as it arrives ----------------------------------------------------------------


async def waiting_receive(session: RtpSession) -> asyncio.Task[RtpAudio | RtpDigit | None]:
    task = asyncio.create_task(next_item(session))
    await asyncio.sleep(0)  # one loop turn: the task now waits in receive
    return task


async def test_audio_arriving_while_the_consumer_waits_goes_to_the_handler_without_waking_it(
    session: RtpSession, peer: Peer
) -> None:
    taken: list[bytes] = []
    session.handle_audio_now(lambda payload: taken.append(payload) is None)
    receiving = await waiting_receive(session)
    for sequence in (1, 2, 3):
        peer.send(audio(sequence, bytes([sequence])), session.local_port)
    await until(lambda: len(taken) == 3)
    assert taken == [b"\x01", b"\x02", b"\x03"] and not receiving.done()
    peer.send(event(1, 480, 4, end=True), session.local_port)  # digits always go through receive
    assert await receiving == RtpDigit("1")


async def test_audio_the_handler_declines_is_what_receive_returns(session: RtpSession, peer: Peer) -> None:
    session.handle_audio_now(lambda payload: False)
    receiving = await waiting_receive(session)
    peer.send(audio(1, b"kept"), session.local_port)
    assert await receiving == RtpAudio(b"kept")


async def test_a_handler_failure_is_raised_by_the_next_receive(session: RtpSession, peer: Peer) -> None:
    def failing(payload: bytes) -> bool:
        raise RuntimeError("the agent broke")

    session.handle_audio_now(failing)
    receiving = await waiting_receive(session)
    peer.send(audio(1), session.local_port)
    with pytest.raises(RuntimeError, match="the agent broke"):
        await receiving


async def test_audio_arriving_while_nobody_waits_is_queued_not_handed_over(
    session: RtpSession, peer: Peer
) -> None:
    taken: list[bytes] = []
    session.handle_audio_now(lambda payload: taken.append(payload) is None)
    peer.send(audio(1, b"first"), session.local_port)
    await until(lambda: session.packets_in == 1)
    assert await next_item(session) == RtpAudio(b"first") and taken == []
