"""RFC 3261 §18.1.1 on real loopback sockets: a request over 1300 bytes bound for UDP goes over TCP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.sip.message import SipRequest, SipResponse, parse_message, response_to
from app.sip.transport import UDP_MTU_LIMIT, ListenAddress, Peer
from tests.sip_peers.ports import free_sip_port
from tests.unit.sip.test_transport import Endpoint, RawUdp, options, raw_udp  # noqa: F401

HOST = "127.0.0.1"


def request_of(size: int, via_port: int) -> SipRequest:
    """An OPTIONS of at least `size` bytes (padded with an X- header), its Via saying UDP."""
    message = parse_message(options(via_port=via_port))
    assert isinstance(message, SipRequest)
    message.headers.add("X-Padding", "p" * max(0, size - len(options(via_port=via_port))))
    return message


async def started(*listens: ListenAddress) -> Endpoint:
    endpoint = Endpoint()
    await endpoint.transports.start(list(listens))
    return endpoint


@pytest.fixture
async def sender() -> AsyncIterator[Endpoint]:
    endpoint = await started(ListenAddress("udp", HOST, 0), ListenAddress("tcp", HOST, 0))
    yield endpoint
    await endpoint.transports.stop()


@pytest.fixture
async def far_end() -> AsyncIterator[Endpoint]:
    """A far end listening on UDP and TCP with one port number, like a PBX on 5060."""
    port = free_sip_port()
    endpoint = await started(ListenAddress("udp", HOST, port), ListenAddress("tcp", HOST, port))
    yield endpoint
    await endpoint.transports.stop()


async def test_a_request_over_1300_bytes_goes_over_tcp_with_a_tcp_via(
    sender: Endpoint, far_end: Endpoint
) -> None:
    request = request_of(UDP_MTU_LIMIT + 200, sender.port("udp"))
    await sender.transports.send(request, Peer("udp", HOST, far_end.port("udp")))
    received, peer = await far_end.next_request()
    assert peer.transport == "tcp"
    assert received.top_via.transport == "TCP" and received.top_via.port == sender.port("tcp")
    assert received.top_via.branch == request.top_via.branch  # the same transaction


async def test_the_answer_to_a_request_moved_to_tcp_comes_back_over_that_connection(
    sender: Endpoint, far_end: Endpoint
) -> None:
    await sender.transports.send(request_of(2000, sender.port("udp")), Peer("udp", HOST, far_end.port("udp")))
    received, peer = await far_end.next_request()
    await far_end.transports.send(response_to(received, 200), peer)
    answer, via = await sender.next()
    assert isinstance(answer, SipResponse) and answer.status == 200 and via.transport == "tcp"


async def test_a_request_of_1300_bytes_or_less_stays_on_udp(sender: Endpoint, far_end: Endpoint) -> None:
    request = request_of(UDP_MTU_LIMIT - 100, sender.port("udp"))
    await sender.transports.send(request, Peer("udp", HOST, far_end.port("udp")))
    received, peer = await far_end.next_request()
    assert peer.transport == "udp" and received.top_via.transport == "UDP"


async def test_a_large_request_goes_over_udp_when_the_far_end_takes_no_tcp(
    sender: Endpoint,
    raw_udp: RawUdp,  # noqa: F811
) -> None:
    await sender.transports.send(request_of(2000, sender.port("udp")), Peer("udp", HOST, raw_udp.port))
    received = await raw_udp.next()
    assert isinstance(received, SipRequest) and received.top_via.transport == "UDP"


async def test_a_large_request_to_a_uri_saying_transport_udp_stays_on_udp(
    sender: Endpoint, far_end: Endpoint
) -> None:
    peer = Peer("udp", HOST, far_end.port("udp"), udp_only=True)
    await sender.transports.send(request_of(2000, sender.port("udp")), peer)
    _, arrived = await far_end.next_request()
    assert arrived.transport == "udp"


async def test_a_large_response_to_a_udp_request_stays_on_udp(sender: Endpoint, far_end: Endpoint) -> None:
    await sender.transports.send(request_of(200, sender.port("udp")), Peer("udp", HOST, far_end.port("udp")))
    received, peer = await far_end.next_request()
    response = response_to(received, 200)
    response.headers.add("X-Padding", "p" * 2000)
    await far_end.transports.send(response, peer)
    answer, via = await sender.next()
    assert isinstance(answer, SipResponse) and via.transport == "udp"
