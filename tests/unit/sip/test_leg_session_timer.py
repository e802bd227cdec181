"""A SIP leg's session timer (RFC 4028) on a fake clock: our refreshes, the far end's, and expiry."""

from __future__ import annotations

import asyncio
from typing import Any

from app.sip.dialog import Dialog
from app.sip.leg import SipLeg
from app.sip.message import SipRequest, SipResponse, parse_message
from tests.unit.sip.fake_clock import FakeClock
from tests.unit.sip.test_leg import HERE, INVITE, SOURCE, Listener, Sent, answer, request

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


def timed_leg(*invite_headers: str, sent: Sent | None = None) -> tuple[SipLeg, Sent, FakeClock, SipResponse]:
    """A leg answered with a 200 to an INVITE carrying `invite_headers` (requests it sends go to `sent`);
    the 200 is returned."""
    extra = "".join(f"{h}\r\n" for h in invite_headers)
    text = INVITE.replace("Content-Length: 0", extra + "Content-Length: 0")
    invite = parse_message(text.encode())
    assert isinstance(invite, SipRequest)
    sent, clock = sent or Sent(), FakeClock()
    leg = SipLeg(
        Dialog.as_uas(invite, "ours", SOURCE, HERE),
        sent,  # type: ignore[arg-type]
        sent,  # type: ignore[arg-type]
        SDP,
        sent.spawn,
        clock,
    )
    leg.listen(Listener())
    ok = SipResponse(200, "OK", invite.headers.copy())
    leg.time_session(invite, ok)
    return leg, sent, clock, ok


async def settled(sent: Sent) -> None:
    await asyncio.gather(*sent.tasks)


async def test_the_answer_to_an_invite_with_session_expires_carries_it() -> None:
    _, _, _, ok = timed_leg("Supported: timer", "Session-Expires: 1800;refresher=uac")
    assert ok.headers.get("Session-Expires") == "1800;refresher=uac" and ok.headers.get("Require") == "timer"


async def test_as_refresher_the_leg_sends_an_update_at_half_the_interval_when_the_far_end_allows_it() -> None:
    leg, sent, clock, _ = timed_leg("Supported: timer", "Session-Expires: 90;refresher=uas")
    leg.peer_allows_update = True
    clock.advance(45)
    await settled(sent)
    refresh = sent.requests[0]
    assert refresh.method == "UPDATE" and not refresh.body
    assert refresh.headers.get("Session-Expires") == "90;refresher=uac"


async def test_without_update_the_refresh_is_a_reinvite_with_the_same_sdp_and_is_acknowledged() -> None:
    _, sent, clock, _ = timed_leg("Supported: timer", "Session-Expires: 90;refresher=uas")
    clock.advance(45)
    await settled(sent)
    refresh, ack = sent.requests
    assert refresh.method == "INVITE" and refresh.body == SDP
    assert ack.method == "ACK" and ack.cseq[0] == refresh.cseq[0]


async def test_an_answered_refresh_restarts_the_timer() -> None:
    leg, sent, clock, _ = timed_leg("Supported: timer", "Session-Expires: 90;refresher=uas")
    leg.peer_allows_update = True
    clock.advance(45)
    await settled(sent)
    clock.advance(45)
    await settled(sent)
    assert [r.method for r in sent.requests] == ["UPDATE", "UPDATE"]


async def test_no_refresh_from_the_far_end_ends_the_call_with_the_reason() -> None:
    leg, _, clock, _ = timed_leg("Supported: timer", "Session-Expires: 90;refresher=uac")
    expired: list[str] = []
    leg.on_session_expired = expired.append
    clock.advance(60)  # 90 s minus min(32 s, 90 s / 3)
    assert expired and "not refreshed" in expired[0]


async def test_with_nobody_told_an_expired_session_is_ended_by_bye() -> None:
    leg, sent, clock, _ = timed_leg("Supported: timer", "Session-Expires: 90;refresher=uac")
    clock.advance(60)
    await settled(sent)
    assert leg.over and [r.method for r in sent.requests] == ["BYE"]


async def test_the_far_ends_update_refresh_restarts_the_timer_and_is_answered_with_session_expires() -> None:
    leg, _, clock, _ = timed_leg("Supported: timer", "Session-Expires: 90;refresher=uac")
    expired: list[str] = []
    leg.on_session_expired = expired.append
    clock.advance(50)
    update = request("UPDATE", 2)
    update.headers.add("Supported", "timer")
    update.headers.add("Session-Expires", "90;refresher=uac")
    answers = await answer(leg, update)
    assert answers.status == 200 and answers.responses[0].headers.get("Session-Expires") == "90;refresher=uac"
    clock.advance(50)
    assert not expired


async def test_a_refresh_asking_for_less_than_90_s_gets_422_and_leaves_the_media_alone() -> None:
    leg, _, _, _ = timed_leg("Supported: timer", "Session-Expires: 90;refresher=uac")
    offers: list[bytes] = []
    leg.on_offer = lambda offer, previous: offers.append(offer) or previous
    reinvite = request("INVITE", 2, SDP.decode(), "application/sdp")
    reinvite.headers.add("Supported", "timer")
    reinvite.headers.add("Session-Expires", "30")
    answers = await answer(leg, reinvite)
    assert answers.status == 422 and answers.responses[0].headers.get("Min-SE") == "90"
    assert offers == []


async def test_a_leg_that_is_over_stops_its_session_timer() -> None:
    leg, _, clock, _ = timed_leg("Supported: timer", "Session-Expires: 90;refresher=uac")
    expired: list[str] = []
    leg.on_session_expired = expired.append
    assert (await answer(leg, request("BYE", 2))).status == 200
    clock.advance(1000)
    assert not expired


class Pending(Sent):
    """Like Sent, but a request's answer waits until `answer` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = asyncio.Event()

    def request(self, message: SipRequest, peer: Any) -> Any:
        self.requests.append(message)
        answer = self.answer

        class Final:
            async def final(self) -> SipResponse:
                await answer.wait()
                return SipResponse(200, "OK", message.headers.copy())

        return Final()


async def test_a_reinvite_from_the_far_end_crossing_our_refresh_gets_491() -> None:
    pending = Pending()
    leg, _, clock, _ = timed_leg("Supported: timer", "Session-Expires: 90;refresher=uas", sent=pending)
    clock.advance(45)
    await asyncio.sleep(0)  # our re-INVITE is sent and waits for its answer
    crossing = await answer(leg, request("INVITE", 2, SDP.decode(), "application/sdp"))
    pending.answer.set()
    await asyncio.gather(*pending.tasks)
    assert crossing.status == 491


class AnsweringWithSdp(Sent):
    """Like Sent, but every 200 carries an SDP answer."""

    def request(self, message: SipRequest, peer: Any) -> Any:
        self.requests.append(message)

        class Final:
            async def final(self) -> SipResponse:
                return SipResponse(200, "OK", message.headers.copy(), b"v=0 answer")

        return Final()


async def test_the_answer_to_our_refresh_reinvite_is_applied_to_the_media() -> None:
    leg, sent, clock, _ = timed_leg(
        "Supported: timer", "Session-Expires: 90;refresher=uas", sent=AnsweringWithSdp()
    )
    answers: list[bytes] = []
    leg.on_answer = answers.append
    clock.advance(45)
    await settled(sent)
    assert answers == [b"v=0 answer"]
