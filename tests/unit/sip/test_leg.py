"""A SIP call's leg: what it answers inside the dialog and what it tells the call."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from app.sip.dialog import Dialog, LocalAddress
from app.sip.leg import SipLeg, dtmf_relay_digit
from app.sip.message import SipRequest, SipResponse, parse_message
from app.sip.transport import Peer

HERE = LocalAddress("udp", "192.0.2.10", 5060)
SOURCE = Peer("udp", "203.0.113.5", 5060)
INVITE = (
    "INVITE sip:agent_1@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKa1\r\n"
    "From: <sip:alice@example.com>;tag=from1\r\nTo: <sip:agent_1@192.0.2.10>\r\nCall-ID: leg-1\r\n"
    "CSeq: 1 INVITE\r\nContact: <sip:alice@203.0.113.5>\r\nContent-Length: 0\r\n\r\n"
)


def request(method: str, cseq: int, body: str = "", content_type: str | None = None) -> SipRequest:
    ctype = f"Content-Type: {content_type}\r\n" if content_type else ""
    text = (
        f"{method} sip:callbridge@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5;branch=z9hG4bK{cseq}\r\n"
        "From: <sip:alice@example.com>;tag=from1\r\nTo: <sip:agent_1@192.0.2.10>;tag=ours\r\n"
        f"Call-ID: leg-1\r\nCSeq: {cseq} {method}\r\n{ctype}Content-Length: {len(body)}\r\n\r\n{body}"
    )
    message = parse_message(text.encode())
    assert isinstance(message, SipRequest)
    return message


class Answers:
    """A server transaction that keeps what it was answered."""

    def __init__(self) -> None:
        self.responses: list[SipResponse] = []

    async def respond(self, response: SipResponse) -> None:
        self.responses.append(response)

    @property
    def status(self) -> int:
        return self.responses[-1].status


class Sent:
    """Transaction layer and transports that keep the requests sent; every request answered 200."""

    def __init__(self) -> None:
        self.requests: list[SipRequest] = []
        self.tasks: list[asyncio.Future[object]] = []

    def request(self, message: SipRequest, peer: Peer) -> Any:
        self.requests.append(message)

        class Final:
            async def final(self) -> SipResponse:
                return SipResponse(200, "OK", message.headers.copy())

        return Final()

    async def send(self, message: SipRequest, peer: Peer) -> None:
        self.requests.append(message)

    def spawn(self, work: Coroutine[Any, Any, object], name: str) -> None:
        self.tasks.append(asyncio.ensure_future(work))


class Listener:
    def __init__(self) -> None:
        self.hung_up: list[str] = []
        self.digits: list[str] = []

    def far_end_hung_up(self, reason: str) -> None:
        self.hung_up.append(reason)

    def signalled_digit(self, digit: str) -> None:
        self.digits.append(digit)


def new_leg() -> tuple[SipLeg, Sent, Listener]:
    invite = parse_message(INVITE.encode())
    assert isinstance(invite, SipRequest)
    sent, listener = Sent(), Listener()
    leg = SipLeg(
        Dialog.as_uas(invite, "ours", SOURCE, HERE),
        sent,  # type: ignore[arg-type]
        sent,  # type: ignore[arg-type]
        b"v=0\r\n",
        sent.spawn,
    )
    leg.listen(listener)
    return leg, sent, listener


async def answer(leg: SipLeg, message: SipRequest) -> Answers:
    answers = Answers()
    await leg.on_request(message, answers)  # type: ignore[arg-type]
    return answers


async def test_the_far_ends_bye_is_answered_200_and_ends_the_call() -> None:
    leg, _, listener = new_leg()
    assert (await answer(leg, request("BYE", 2))).status == 200
    assert listener.hung_up and leg.over


async def test_a_dtmf_relay_info_is_answered_200_and_becomes_a_digit() -> None:
    leg, _, listener = new_leg()
    info = request("INFO", 2, "Signal=#\r\nDuration=250\r\n", "application/dtmf-relay")
    assert (await answer(leg, info)).status == 200
    assert listener.digits == ["#"]


async def test_an_info_of_another_kind_is_refused_415() -> None:
    leg, _, listener = new_leg()
    assert (await answer(leg, request("INFO", 2, "<xml/>", "application/xml"))).status == 415
    assert listener.digits == []


async def test_a_reinvite_is_answered_200_with_the_same_sdp() -> None:
    leg, _, _ = new_leg()
    answers = await answer(leg, request("INVITE", 2))
    assert answers.status == 200 and answers.responses[-1].body == b"v=0\r\n"


async def test_an_unknown_method_in_the_dialog_is_501_with_allow() -> None:
    leg, _, _ = new_leg()
    answers = await answer(leg, request("MESSAGE", 2))
    assert answers.status == 501 and "BYE" in answers.responses[-1].headers.get_all("Allow")


async def test_a_request_with_an_old_cseq_is_answered_500() -> None:
    leg, _, _ = new_leg()
    await answer(leg, request("INFO", 5))
    assert (await answer(leg, request("INFO", 4))).status == 500


async def test_hanging_up_sends_one_bye_and_never_waits_for_it() -> None:
    leg, sent, _ = new_leg()
    leg.hang_up()
    leg.hang_up()
    assert len(sent.tasks) == 1
    await asyncio.wait_for(sent.tasks[0], 1)
    assert [r.method for r in sent.requests] == ["BYE"]


async def test_after_the_far_ends_bye_our_hang_up_sends_nothing() -> None:
    leg, sent, _ = new_leg()
    await answer(leg, request("BYE", 2))
    leg.hang_up()
    assert sent.requests == []


def test_the_digit_of_a_dtmf_relay_body() -> None:
    assert dtmf_relay_digit(b"Signal=5\r\nDuration=160\r\n") == "5"
    assert dtmf_relay_digit(b"signal = a\n") == "A"
    assert dtmf_relay_digit(b"Duration=160\r\n") is None
