"""Hold by re-INVITE/UPDATE (RFC 3264 §8.4): the answer, our RTP stopping and resuming, the RTP timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from app.calls import timers
from app.calls.ending import CallEnding
from app.schemas.calls import EndReason
from app.sip.call_transport import SipCallTransport
from app.sip.media_setup import RunningMedia, SipMediaSetup
from app.sip.ports import RtpPortRange
from app.sip.rtp_session import RtpSession
from app.sip.sdp import answer_offer, parse_sdp
from tests.api.sip_phone import sdp_offer

HOST = "127.0.0.1"
PORTS = RtpPortRange(43200, 43298)
PHONE_PORT = 43400


def offer(direction: str = "sendrecv", host: str = HOST) -> bytes:
    return sdp_offer(host, PHONE_PORT).replace(b"a=sendrecv", f"a={direction}".encode())


class Media:
    """A running call's media (RunningMedia on a real RTP session), with the holds it reported."""

    def __init__(self, rtp: RtpSession) -> None:
        self.rtp = rtp
        setup = SipMediaSetup(PORTS, HOST, HOST, ["PCMU"], rtp_timeout_s=30.0)
        self.answer, negotiated = answer_offer(parse_sdp(offer()), ["PCMU"], HOST, rtp.local_port, 1)
        self.holds: list[bool] = []
        self.running = RunningMedia(setup, rtp, negotiated, self.holds.append)
        self.rtp.configure(HOST, PHONE_PORT, 0, 8000, 101, 160)

    def offered(self, body: bytes) -> bytes:
        self.answer = self.running.answer(body, self.answer)
        return self.answer


@pytest.fixture
async def media() -> AsyncIterator[Media]:
    rtp = await RtpSession.open(HOST, PORTS)
    yield Media(rtp)
    rtp.close()


@pytest.mark.parametrize(("held_by", "answered"), [("sendonly", b"a=recvonly"), ("inactive", b"a=inactive")])
async def test_a_hold_offer_is_answered_per_rfc_3264_and_reported(
    media: Media, held_by: str, answered: bytes
) -> None:
    assert answered in media.offered(offer(held_by))
    assert media.holds == [True]


async def test_an_old_style_hold_to_0_0_0_0_is_a_hold(media: Media) -> None:
    media.offered(offer(host="0.0.0.0"))
    assert media.holds == [True]


async def test_sendrecv_after_a_hold_resumes_and_is_reported(media: Media) -> None:
    media.offered(offer("sendonly"))
    assert b"a=sendrecv" in media.offered(offer("sendrecv"))
    assert media.holds == [True, False]


async def test_an_offer_that_changes_nothing_about_the_direction_reports_nothing(media: Media) -> None:
    media.offered(offer("sendrecv"))
    assert media.holds == []


async def test_an_answer_to_our_offer_that_holds_is_applied_and_reported(media: Media) -> None:
    answer = offer("sendonly").replace(b"o=phone 1 1", b"o=phone 1 2")
    media.running.accept(answer)
    assert media.holds == [True] and not media.running.negotiated.sends


async def test_on_hold_no_rtp_is_sent_and_after_resuming_it_is(media: Media) -> None:
    media.offered(offer("inactive"))
    media.rtp.send_audio(b"\xff" * 160)
    assert media.rtp.stats.packets_out == 0 and media.rtp.stats.held == 1
    media.offered(offer("sendrecv"))
    media.rtp.send_audio(b"\xff" * 160)
    assert media.rtp.stats.packets_out == 1


class Leg:
    call_id = "hold-1"

    def hang_up(self) -> None:
        pass


async def test_a_held_transport_drops_its_rtp_timeout_and_gets_it_back_on_resume(media: Media) -> None:
    transport = SipCallTransport(Leg(), media.rtp, media.running.negotiated, 30.0)
    transport.hold(True)
    assert transport.media_idle_timeout_s is None
    transport.hold(False)
    assert transport.media_idle_timeout_s == 30.0


async def test_the_media_idle_timer_does_not_end_the_call_while_suspended() -> None:
    ending = CallEnding()
    checks = 0
    checks_when_ended: list[int] = []
    finish = ending.finish

    def finished(reason: EndReason, text: str) -> None:
        checks_when_ended.append(checks)
        finish(reason, text)

    ending.finish = finished  # type: ignore[method-assign]

    def suspended() -> bool:  # on hold for two whole timeouts' worth of checks (10 per timeout)
        nonlocal checks
        checks += 1
        return checks <= 20

    async with asyncio.timeout(5):
        await timers.media_idle(0.05, lambda: 0, ending, suspended)
    assert checks_when_ended and checks_when_ended[0] > 20
