"""SipCallTransport: a SIP leg and its RTP stream as the CallTransport a session runs on."""

from __future__ import annotations

import asyncio

import pytest

from app.calls.transport import TransportClosed
from app.media.formats import PCMU_8K, pcm16
from app.media.g722 import G722Encoder
from app.media.opus import OpusDecoder, OpusEncoder
from app.providers.base import StreamAudio, StreamDtmf, StreamStop
from app.sip.call_transport import SipCallTransport
from app.sip.rtp_session import RtpAudio, RtpClosed, RtpDigit
from app.sip.sdp import CODECS, Negotiated


class FakeRtp:
    def __init__(self, *items: object) -> None:
        self.items: asyncio.Queue[object] = asyncio.Queue()
        for item in items:
            self.items.put_nowait(item)
        self.sent: list[bytes] = []
        self.digits: list[str] = []
        self.closed = False
        self.packet_sent = asyncio.Event()

    async def receive(self) -> object:
        if self.closed:
            raise RtpClosed("closed")
        item = await self.items.get()
        if item is RtpClosed:
            raise RtpClosed("closed")
        return item

    def wake(self) -> None:
        self.items.put_nowait(None)

    def send_audio(self, payload: bytes) -> None:
        self.sent.append(payload)
        self.packet_sent.set()

    async def send_digits(self, digits: str, tone_ms: int, gap_ms: int) -> bool:
        self.digits.append(digits)
        return True

    def close(self) -> None:
        self.closed = True
        self.items.put_nowait(RtpClosed)


class FakeLeg:
    call_id = "sip-call-1"

    def __init__(self) -> None:
        self.hang_ups = 0

    def hang_up(self) -> None:
        self.hang_ups += 1


def negotiated(codec: str) -> Negotiated:
    return Negotiated(CODECS[codec], CODECS[codec].static_pt or 0, 101, 20, "127.0.0.1", 4000, "sendrecv")


def transport(codec: str, rtp: FakeRtp, leg: FakeLeg | None = None) -> SipCallTransport:
    return SipCallTransport(leg or FakeLeg(), rtp, negotiated(codec), 30.0)  # type: ignore[arg-type]


async def test_the_stream_starts_at_once_in_the_codecs_wire_format() -> None:
    pcmu, g722 = transport("PCMU", FakeRtp()), transport("G722", FakeRtp())
    try:
        assert pcmu.opening().audio_format == PCMU_8K
        assert g722.opening().audio_format == pcm16(16000)  # G.722 is decoded at the edge
    finally:
        await pcmu.close()
        await g722.close()


async def test_g711_payloads_pass_as_they_are() -> None:
    sip = transport("PCMU", FakeRtp(RtpAudio(b"\x7f" * 160)))
    assert await sip.receive() == StreamAudio(b"\x7f" * 160)


async def test_g722_payloads_arrive_as_16khz_pcm() -> None:
    payload = G722Encoder().encode(bytes(640))
    event = await transport("G722", FakeRtp(RtpAudio(payload))).receive()
    assert isinstance(event, StreamAudio) and len(event.payload) == 640


@pytest.mark.needs_opus
async def test_opus_payloads_arrive_as_16khz_pcm() -> None:
    payload = OpusEncoder().encode(bytes(640))
    event = await transport("opus", FakeRtp(RtpAudio(payload))).receive()
    assert isinstance(event, StreamAudio) and len(event.payload) == 640


@pytest.mark.needs_opus
async def test_agent_audio_leaves_an_opus_call_as_one_opus_packet_per_20_ms() -> None:
    rtp = FakeRtp()
    sip = transport("opus", rtp)
    assert sip.opening().audio_format == pcm16(16000)
    await sip.send_audio(bytes(640))
    await sip.close()
    assert len(OpusDecoder().decode(rtp.sent[0])) == 640


async def test_rfc4733_and_sip_info_digits_are_dtmf_events() -> None:
    sip = transport("PCMU", FakeRtp(RtpDigit("4")))
    assert await sip.receive() == StreamDtmf("4")
    sip.signalled_digit("#")
    assert await sip.receive() == StreamDtmf("#")


async def test_the_far_ends_bye_stops_the_stream_and_our_close_sends_no_bye() -> None:
    leg, rtp = FakeLeg(), FakeRtp()
    sip = transport("PCMU", rtp, leg)
    sip.far_end_hung_up("the caller hung up")
    assert await sip.receive() == StreamStop("the caller hung up")
    with pytest.raises(TransportClosed):
        await sip.receive()
    await sip.close()
    assert leg.hang_ups == 0


async def test_closing_hangs_up_the_leg_once_and_closes_the_rtp() -> None:
    leg, rtp = FakeLeg(), FakeRtp()
    sip = transport("PCMU", rtp, leg)
    await sip.close()
    await sip.close()
    assert leg.hang_ups == 1 and rtp.closed
    with pytest.raises(TransportClosed):
        await sip.send_audio(b"\xff" * 160)


async def test_silence_is_sent_while_the_agent_says_nothing() -> None:
    rtp = FakeRtp()
    sip = transport("PCMU", rtp)
    sip.opening()
    try:
        async with asyncio.timeout(2):
            while len(rtp.sent) < 3:
                rtp.packet_sent.clear()
                await rtp.packet_sent.wait()
    finally:
        await sip.close()
    assert rtp.sent[0] == b"\xff" * 160


async def test_dtmf_goes_out_as_rfc4733_events() -> None:
    rtp = FakeRtp()
    assert await transport("PCMU", rtp).send_dtmf("12#", 200)
    assert rtp.digits == ["12#"]


class HandingRtp(FakeRtp):
    """Keeps the handler the transport gives it, as RtpSession would call it."""

    def __init__(self) -> None:
        super().__init__()
        self.audio_now: object = None

    def handle_audio_now(self, handler: object) -> None:
        self.audio_now = handler


async def test_caller_audio_handed_over_now_arrives_decoded_as_a_stream_event() -> None:
    rtp, events = HandingRtp(), []
    sip = transport("G722", rtp)
    sip.handle_events_now(lambda event: events.append(event))
    assert rtp.audio_now(G722Encoder().encode(bytes(640))) is True  # type: ignore[operator]
    assert [type(e) for e in events] == [StreamAudio] and len(events[0].payload) == 640


async def test_a_handed_over_call_stops_handing_its_audio_to_the_old_session() -> None:
    rtp = HandingRtp()
    sip = transport("PCMU", rtp)
    sip.handle_events_now(lambda event: None)
    sip.hand_over(object(), "bridged")
    assert rtp.audio_now is None
