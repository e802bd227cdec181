"""SIP transactions (RFC 3261 §17, RFC 6026) on a fake clock: retransmissions, timeouts, matching."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field

import pytest

from app.sip.message import SipMessage, SipRequest, SipResponse, parse_message, response_to
from app.sip.transaction import ServerTransaction, State, TransactionLayer
from app.sip.transport import Peer, TransportError
from tests.unit.sip.fake_clock import FakeClock

UDP = Peer("udp", "192.0.2.10", 5060)
TCP = Peer("tcp", "192.0.2.10", 5060)


@dataclass
class Sent:
    message: SipMessage
    peer: Peer
    at: float


@dataclass
class Harness:
    """A transaction layer on a fake clock whose transport records what it is given."""

    clock: FakeClock = field(default_factory=FakeClock)
    sent: list[Sent] = field(default_factory=list)
    requests: list[tuple[SipRequest, Peer, ServerTransaction | None]] = field(default_factory=list)
    strays: list[SipResponse] = field(default_factory=list)
    refuse: bool = False
    layer: TransactionLayer = field(init=False)

    def __post_init__(self) -> None:
        on_request = lambda *args: self.requests.append(args)  # noqa: E731
        self.layer = TransactionLayer(self.send, self.clock, on_request, lambda r, _: self.strays.append(r))

    def send(self, message: SipMessage, peer: Peer) -> Awaitable[None]:
        done = asyncio.get_running_loop().create_future()
        if self.refuse:
            done.set_exception(TransportError("connection refused"))
        else:
            self.sent.append(Sent(message, peer, self.clock.now()))
            done.set_result(None)
        return done

    def times(self, what: str) -> list[float]:
        """When messages were sent: a method ("INVITE") or a status ("200")."""
        return [s.at for s in self.sent if _label(s.message) == what]

    def labels(self) -> list[str]:
        return [_label(s.message) for s in self.sent]


def _label(message: SipMessage) -> str:
    return message.method if isinstance(message, SipRequest) else str(message.status)


def request(method: str, branch: str = "z9hG4bK-1", cseq: int = 1, transport: str = "UDP") -> SipRequest:
    text = (
        f"{method} sip:agent@192.0.2.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 192.0.2.10:5060;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:caller@192.0.2.10>;tag=from1\r\n"
        "To: <sip:agent@192.0.2.1>\r\n"
        "Call-ID: call-1@192.0.2.10\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, SipRequest)
    return message


def ack_for_2xx(cseq: int = 1) -> SipRequest:
    return request("ACK", branch="z9hG4bK-ack2xx", cseq=cseq)


@pytest.fixture
def wire() -> Harness:
    return Harness()


# --- client INVITE ----------------------------------------------------------------------------------


async def test_invite_is_retransmitted_over_udp_at_t1_doubling(wire: Harness) -> None:
    wire.layer.request(request("INVITE"), UDP)
    wire.clock.advance(31.9)
    assert wire.times("INVITE") == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]


async def test_unanswered_invite_ends_with_408_at_64_t1(wire: Harness) -> None:
    transaction = wire.layer.request(request("INVITE"), UDP)
    wire.clock.advance(31.9)
    assert transaction.final_response is None
    wire.clock.advance(0.1)
    final = await asyncio.wait_for(transaction.final(), 1)
    assert final.status == 408


async def test_provisional_response_stops_invite_retransmission(wire: Harness) -> None:
    invite = request("INVITE")
    wire.layer.request(invite, UDP)
    wire.clock.advance(0.6)
    wire.layer.receive(response_to(invite, 180, to_tag="t1"), UDP)
    wire.clock.advance(60)
    assert wire.times("INVITE") == [0.0, 0.5]


async def test_proceeding_invite_waits_past_timer_b_for_its_final(wire: Harness) -> None:
    invite = request("INVITE")
    transaction = wire.layer.request(invite, UDP)
    wire.layer.receive(response_to(invite, 180, to_tag="t1"), UDP)
    wire.clock.advance(120)
    assert transaction.final_response is None


async def test_cancelled_invite_without_a_final_gives_up_64_t1_after_the_cancel(wire: Harness) -> None:
    invite = request("INVITE")
    transaction = wire.layer.request(invite, UDP)
    wire.layer.receive(response_to(invite, 180, to_tag="t1"), UDP)
    wire.clock.advance(10)
    wire.layer.request(transaction.cancel_request(), UDP)
    wire.clock.advance(31.9)
    assert transaction.final_response is None
    wire.clock.advance(0.1)
    assert (await asyncio.wait_for(transaction.final(), 1)).status == 408


async def test_closing_the_layer_ends_waiting_client_transactions_with_503(wire: Harness) -> None:
    transaction = wire.layer.request(request("OPTIONS"), UDP)
    wire.layer.close()
    assert (await asyncio.wait_for(transaction.final(), 1)).status == 503


async def test_invite_over_tcp_is_not_retransmitted(wire: Harness) -> None:
    wire.layer.request(request("INVITE", transport="TCP"), TCP)
    wire.clock.advance(31.9)
    assert wire.times("INVITE") == [0.0]


async def test_responses_yield_provisional_then_final(wire: Harness) -> None:
    invite = request("INVITE")
    transaction = wire.layer.request(invite, UDP)
    wire.layer.receive(response_to(invite, 180, to_tag="t1"), UDP)
    wire.layer.receive(response_to(invite, 200, to_tag="t1"), UDP)
    statuses = [response.status async for response in transaction.responses()]
    assert statuses == [180, 200]


async def test_non_2xx_final_is_acked_by_the_transaction_on_the_invite_branch(wire: Harness) -> None:
    invite = request("INVITE")
    wire.layer.request(invite, UDP)
    wire.layer.receive(response_to(invite, 486, to_tag="busy"), UDP)
    ack = wire.sent[-1].message
    assert isinstance(ack, SipRequest)
    assert (ack.method, ack.top_via.branch, ack.cseq) == ("ACK", "z9hG4bK-1", (1, "ACK"))
    assert ack.to.tag == "busy"


async def test_retransmitted_non_2xx_final_is_acked_again_and_not_passed_up(wire: Harness) -> None:
    invite = request("INVITE")
    transaction = wire.layer.request(invite, UDP)
    busy = response_to(invite, 486, to_tag="busy")
    wire.layer.receive(busy, UDP)
    wire.layer.receive(busy, UDP)
    assert wire.labels() == ["INVITE", "ACK", "ACK"]
    assert [r.status async for r in transaction.responses()] == [486]
    assert wire.strays == []


async def test_2xx_retransmission_after_the_final_is_a_stray_response(wire: Harness) -> None:
    invite = request("INVITE")
    wire.layer.request(invite, UDP)
    ok = response_to(invite, 200, to_tag="t1")
    wire.layer.receive(ok, UDP)
    wire.layer.receive(ok, UDP)
    assert wire.strays == [ok]


async def test_transport_failure_ends_the_client_transaction_with_503(wire: Harness) -> None:
    wire.refuse = True
    transaction = wire.layer.request(request("INVITE"), UDP)
    final = await asyncio.wait_for(transaction.final(), 1)
    assert final.status == 503


async def test_the_503_for_a_transport_failure_says_what_failed(wire: Harness) -> None:
    wire.refuse = True
    transaction = wire.layer.request(request("INVITE"), UDP)
    final = await asyncio.wait_for(transaction.final(), 1)
    assert final.reason == "Service Unavailable (connection refused)"


async def test_cancel_request_copies_the_invite_branch_and_cseq_number(wire: Harness) -> None:
    transaction = wire.layer.request(request("INVITE", cseq=7), UDP)
    cancel = transaction.cancel_request()
    assert (cancel.method, cancel.top_via.branch, cancel.cseq) == ("CANCEL", "z9hG4bK-1", (7, "CANCEL"))


# --- client non-INVITE ------------------------------------------------------------------------------


async def test_non_invite_retransmission_interval_is_capped_at_t2(wire: Harness) -> None:
    wire.layer.request(request("OPTIONS"), UDP)
    wire.clock.advance(20)
    assert wire.times("OPTIONS") == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5]


async def test_non_invite_retransmits_every_t2_once_a_provisional_came(wire: Harness) -> None:
    options = request("OPTIONS")
    wire.layer.request(options, UDP)
    wire.layer.receive(response_to(options, 100), UDP)
    wire.clock.advance(9)
    assert wire.times("OPTIONS") == [0.0, 0.5, 4.5, 8.5]


async def test_unanswered_non_invite_ends_with_408_at_64_t1(wire: Harness) -> None:
    transaction = wire.layer.request(request("OPTIONS"), UDP)
    wire.clock.advance(32)
    assert (await asyncio.wait_for(transaction.final(), 1)).status == 408


async def test_non_invite_over_tcp_is_not_retransmitted(wire: Harness) -> None:
    wire.layer.request(request("OPTIONS", transport="TCP"), TCP)
    wire.clock.advance(31.9)
    assert wire.times("OPTIONS") == [0.0]


async def test_response_matching_no_client_transaction_is_stray(wire: Harness) -> None:
    orphan = response_to(request("BYE", branch="z9hG4bK-unknown"), 200)
    wire.layer.receive(orphan, UDP)
    assert wire.strays == [orphan]


# --- server non-INVITE ------------------------------------------------------------------------------


async def test_retransmitted_request_is_absorbed_and_the_last_response_resent(wire: Harness) -> None:
    bye = request("BYE")
    wire.layer.receive(bye, UDP)
    _, _, transaction = wire.requests[0]
    assert transaction is not None
    await transaction.respond(response_to(bye, 200))
    wire.layer.receive(request("BYE"), UDP)
    assert len(wire.requests) == 1
    assert wire.labels() == ["200", "200"]


async def test_non_invite_server_transaction_forgets_the_request_after_timer_j(wire: Harness) -> None:
    bye = request("BYE")
    wire.layer.receive(bye, UDP)
    await wire.requests[0][2].respond(response_to(bye, 200))  # type: ignore[union-attr]
    wire.clock.advance(32)
    wire.layer.receive(request("BYE"), UDP)
    assert len(wire.requests) == 2


# --- server INVITE ----------------------------------------------------------------------------------


def incoming_invite(wire: Harness, peer: Peer = UDP) -> ServerTransaction:
    wire.layer.receive(request("INVITE", transport=peer.transport.upper()), peer)
    transaction = wire.requests[-1][2]
    assert transaction is not None
    return transaction


async def test_server_invite_sends_100_trying_when_the_tu_is_silent_for_200ms(wire: Harness) -> None:
    incoming_invite(wire)
    wire.clock.advance(0.19)
    assert wire.sent == []
    wire.clock.advance(0.01)
    assert wire.labels() == ["100"]


async def test_server_invite_sends_no_100_when_the_tu_answered_in_time(wire: Harness) -> None:
    transaction = incoming_invite(wire)
    await transaction.respond(response_to(transaction.request, 180, to_tag="t1"))
    wire.clock.advance(1)
    assert wire.labels() == ["180"]


async def test_retransmitted_invite_gets_the_last_provisional_again(wire: Harness) -> None:
    transaction = incoming_invite(wire)
    await transaction.respond(response_to(transaction.request, 180, to_tag="t1"))
    wire.layer.receive(request("INVITE"), UDP)
    assert wire.labels() == ["180", "180"]
    assert len(wire.requests) == 1


async def test_2xx_is_retransmitted_until_the_ack_then_stops(wire: Harness) -> None:
    transaction = incoming_invite(wire)
    await transaction.respond(response_to(transaction.request, 200, to_tag="t1"))
    wire.clock.advance(4)
    wire.layer.receive(ack_for_2xx(), UDP)
    wire.clock.advance(60)
    assert wire.times("200") == [0.0, 0.5, 1.5, 3.5]
    assert transaction.acked.result() is True


async def test_an_acked_invite_transaction_is_forgotten_after_timer_l(wire: Harness) -> None:
    transaction = incoming_invite(wire)
    await transaction.respond(response_to(transaction.request, 200, to_tag="t1"))
    wire.layer.receive(ack_for_2xx(), UDP)
    wire.clock.advance(33)  # Timer L = 64*T1
    assert transaction.state is State.TERMINATED
    delivered = len(wire.requests)
    wire.layer.receive(transaction.request, UDP)  # no transaction holds it any more: a new request
    assert len(wire.requests) == delivered + 1


async def test_ack_for_a_2xx_is_passed_to_the_tu_without_a_transaction(wire: Harness) -> None:
    transaction = incoming_invite(wire)
    await transaction.respond(response_to(transaction.request, 200, to_tag="t1"))
    ack = ack_for_2xx()
    wire.layer.receive(ack, UDP)
    assert wire.requests[-1] == (ack, UDP, None)


async def test_2xx_retransmission_interval_is_capped_at_t2(wire: Harness) -> None:
    transaction = incoming_invite(wire)
    await transaction.respond(response_to(transaction.request, 200, to_tag="t1"))
    wire.clock.advance(16)
    assert wire.times("200") == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5]


async def test_no_ack_within_64_t1_sets_acked_false(wire: Harness) -> None:
    transaction = incoming_invite(wire)
    await transaction.respond(response_to(transaction.request, 200, to_tag="t1"))
    wire.clock.advance(31.9)
    assert not transaction.acked.done()
    wire.clock.advance(0.1)
    assert transaction.acked.result() is False


async def test_2xx_over_tcp_is_not_retransmitted(wire: Harness) -> None:
    transaction = incoming_invite(wire, TCP)
    await transaction.respond(response_to(transaction.request, 200, to_tag="t1"))
    wire.clock.advance(31.9)
    assert wire.times("200") == [0.0]


async def test_late_invite_retransmission_after_the_ack_is_absorbed(wire: Harness) -> None:
    transaction = incoming_invite(wire)
    await transaction.respond(response_to(transaction.request, 200, to_tag="t1"))
    wire.layer.receive(ack_for_2xx(), UDP)
    wire.layer.receive(request("INVITE"), UDP)
    assert [r[0].method for r in wire.requests] == ["INVITE", "ACK"]
    assert wire.times("200") == [0.0]


async def test_non_2xx_final_is_retransmitted_with_timer_g_until_the_ack(wire: Harness) -> None:
    transaction = incoming_invite(wire)
    await transaction.respond(response_to(transaction.request, 486, to_tag="t1"))
    wire.clock.advance(2)
    wire.layer.receive(request("ACK"), UDP)
    wire.clock.advance(60)
    assert wire.times("486") == [0.0, 0.5, 1.5]


async def test_ack_for_a_non_2xx_final_is_absorbed(wire: Harness) -> None:
    transaction = incoming_invite(wire)
    await transaction.respond(response_to(transaction.request, 486, to_tag="t1"))
    wire.layer.receive(request("ACK"), UDP)
    assert [r[0].method for r in wire.requests] == ["INVITE"]
    assert transaction.acked.result() is True


# --- CANCEL -----------------------------------------------------------------------------------------


async def test_cancel_is_answered_200_and_the_tu_notified(wire: Harness) -> None:
    transaction = incoming_invite(wire)
    await transaction.respond(response_to(transaction.request, 180, to_tag="t1"))
    wire.layer.receive(request("CANCEL"), UDP)
    ok = wire.sent[-1].message
    assert isinstance(ok, SipResponse)
    assert (ok.status, ok.cseq, ok.to.tag) == (200, (1, "CANCEL"), "t1")
    assert transaction.cancel_received.is_set() and transaction.cancelled
    assert [r[0].method for r in wire.requests] == ["INVITE"]


async def test_after_a_cancel_the_tus_487_goes_out_and_its_ack_is_absorbed(wire: Harness) -> None:
    transaction = incoming_invite(wire)
    wire.layer.receive(request("CANCEL"), UDP)
    await transaction.cancel_received.wait()
    await transaction.respond(response_to(transaction.request, 487, to_tag="t1"))
    wire.layer.receive(request("ACK"), UDP)
    wire.clock.advance(60)
    assert wire.labels() == ["200", "487"]
    assert [r[0].method for r in wire.requests] == ["INVITE"]


async def test_cancel_matching_no_invite_is_answered_481(wire: Harness) -> None:
    wire.layer.receive(request("CANCEL", branch="z9hG4bK-nothing"), UDP)
    assert wire.labels() == ["481"]
    assert wire.requests == []
