"""SIP transports on real loopback sockets: UDP, TCP framing and reuse, received/rport, bad input."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app.sip.message import SipMessage, SipRequest, SipResponse, parse_message, response_to
from app.sip.tls import server_context
from app.sip.transport import ListenAddress, Peer, SipTransports, TransportError, parse_listen, resolve_peer
from tests.sip_peers.certificates import self_signed

WAIT = 5.0


def options(
    via_host: str = "127.0.0.1", via_port: int = 5999, transport: str = "UDP", rport: bool = True
) -> bytes:
    via = f"SIP/2.0/{transport} {via_host}:{via_port};branch=z9hG4bK-t1" + (";rport" if rport else "")
    return (
        "OPTIONS sip:agent@127.0.0.1 SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:caller@127.0.0.1>;tag=f1\r\n"
        "To: <sip:agent@127.0.0.1>\r\n"
        "Call-ID: transport-test@127.0.0.1\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class Endpoint:
    """SipTransports listening on loopback port 0, with what it received queued."""

    def __init__(self, **options: Any) -> None:
        self.messages: asyncio.Queue[tuple[SipMessage, Peer]] = asyncio.Queue()
        self.bad: asyncio.Queue[tuple[bytes, Peer, str]] = asyncio.Queue()
        self.transports = SipTransports(
            lambda m, p: self.messages.put_nowait((m, p)),
            lambda d, p, r: self.bad.put_nowait((d, p, r)),
            **options,
        )

    async def next(self) -> tuple[SipMessage, Peer]:
        return await asyncio.wait_for(self.messages.get(), WAIT)

    async def next_request(self) -> tuple[SipRequest, Peer]:
        message, peer = await self.next()
        assert isinstance(message, SipRequest)
        return message, peer

    def port(self, transport: str) -> int:
        return self.transports.local(transport).port


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    endpoint = Endpoint()
    await endpoint.transports.start(parse_listen("udp:127.0.0.1:0,tcp:127.0.0.1:0"))
    yield endpoint
    await endpoint.transports.stop()


class RawUdp(asyncio.DatagramProtocol):
    """A plain UDP socket standing in for a far end we do not control."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.received.put_nowait(data)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    async def next(self) -> SipMessage:
        return parse_message(await asyncio.wait_for(self.received.get(), WAIT))


@pytest.fixture
async def raw_udp() -> AsyncIterator[RawUdp]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(RawUdp, local_addr=("127.0.0.1", 0))
    yield protocol
    transport.close()


def test_listen_spec_parses_transports_hosts_and_ports() -> None:
    assert parse_listen("udp:0.0.0.0:5060, tcp:[::1]:5070") == [
        ListenAddress("udp", "0.0.0.0", 5060),
        ListenAddress("tcp", "::1", 5070),
    ]


@pytest.mark.parametrize("spec", ["sctp:0.0.0.0:5060", "udp:0.0.0.0", "udp::5060", "tcp:h:99999"])
def test_malformed_listen_spec_is_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(spec)


async def test_port_0_listens_report_the_bound_port(endpoint: Endpoint) -> None:
    assert endpoint.port("udp") > 0 and endpoint.port("tcp") > 0


async def test_udp_request_and_response_round_trip(endpoint: Endpoint) -> None:
    caller = Endpoint()
    await caller.transports.start([ListenAddress("udp", "127.0.0.1", 0)])
    try:
        request = parse_message(options(via_port=caller.port("udp")))
        await caller.transports.send(request, Peer("udp", "127.0.0.1", endpoint.port("udp")))
        received, peer = await endpoint.next_request()
        await endpoint.transports.send(response_to(received, 200), peer)
        answer, _ = await caller.next()
        assert isinstance(answer, SipResponse) and answer.status == 200
    finally:
        await caller.transports.stop()


async def test_udp_request_top_via_gets_received_and_rport(endpoint: Endpoint, raw_udp: RawUdp) -> None:
    assert raw_udp.transport is not None
    raw_udp.transport.sendto(options(via_host="10.9.8.7", via_port=5999), ("127.0.0.1", endpoint.port("udp")))
    request, _ = await endpoint.next_request()
    assert request.top_via.params["received"] == "127.0.0.1"
    assert request.top_via.params["rport"] == str(raw_udp.port)


async def test_udp_response_goes_to_the_rport_not_the_via_port(endpoint: Endpoint, raw_udp: RawUdp) -> None:
    assert raw_udp.transport is not None
    raw_udp.transport.sendto(options(via_port=9), ("127.0.0.1", endpoint.port("udp")))
    request, peer = await endpoint.next_request()
    await endpoint.transports.send(response_to(request, 200), peer)
    answer = await raw_udp.next()
    assert isinstance(answer, SipResponse) and answer.status == 200


async def test_malformed_udp_request_goes_to_on_bad_and_can_be_answered_400(
    endpoint: Endpoint, raw_udp: RawUdp
) -> None:
    assert raw_udp.transport is not None
    broken = options(via_port=9).replace(b"Max-Forwards: 70", b"Max-Forwards: many")
    raw_udp.transport.sendto(broken, ("127.0.0.1", endpoint.port("udp")))
    data, peer, _ = await asyncio.wait_for(endpoint.bad.get(), WAIT)
    assert endpoint.transports.answer_bad_request(data, peer, "malformed Max-Forwards")
    answer = await raw_udp.next()
    assert isinstance(answer, SipResponse) and answer.status == 400


async def test_tcp_message_split_across_writes_arrives_whole(endpoint: Endpoint) -> None:
    message = options(transport="TCP").replace(b"Content-Length: 0", b"Content-Length: 5") + b"hello"
    _, writer = await asyncio.open_connection("127.0.0.1", endpoint.port("tcp"))
    try:
        for piece in (message[:10], message[10:100], message[100:-2], message[-2:]):
            writer.write(piece)
            await writer.drain()
        request, peer = await endpoint.next_request()
        assert request.body == b"hello" and peer.transport == "tcp"
    finally:
        writer.close()


async def test_tcp_response_goes_back_over_the_connection_the_request_came_on(endpoint: Endpoint) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port("tcp"))
    try:
        writer.write(options(transport="TCP", via_port=9))
        request, peer = await endpoint.next_request()
        await endpoint.transports.send(response_to(request, 200), peer)
        answer = parse_message(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT))
        assert isinstance(answer, SipResponse) and answer.status == 200
    finally:
        writer.close()


async def test_inbound_tcp_connection_is_reused_for_a_request_to_that_peer(endpoint: Endpoint) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port("tcp"))
    try:
        writer.write(options(transport="TCP"))
        _, peer = await endpoint.next_request()
        bye = parse_message(options(transport="TCP").replace(b"OPTIONS", b"BYE"))
        await endpoint.transports.send(bye, peer)
        sent = parse_message(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT))
        assert isinstance(sent, SipRequest) and sent.method == "BYE"
    finally:
        writer.close()


async def test_tcp_request_to_a_new_peer_opens_a_connection(endpoint: Endpoint) -> None:
    caller = Endpoint()
    await caller.transports.start([ListenAddress("tcp", "127.0.0.1", 0)])
    try:
        request = parse_message(options(transport="TCP", via_port=caller.port("tcp")))
        await caller.transports.send(request, Peer("tcp", "127.0.0.1", endpoint.port("tcp")))
        received, peer = await endpoint.next_request()
        await endpoint.transports.send(response_to(received, 200), peer)
        answer, _ = await caller.next()
        assert isinstance(answer, SipResponse) and answer.status == 200
    finally:
        await caller.transports.stop()


async def test_tcp_crlf_keepalive_ping_is_answered_with_a_pong(endpoint: Endpoint) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port("tcp"))
    try:
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(2), WAIT) == b"\r\n"
    finally:
        writer.close()


async def test_tcp_stream_without_content_length_goes_to_on_bad_and_is_closed(endpoint: Endpoint) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port("tcp"))
    try:
        writer.write(options(transport="TCP").replace(b"Content-Length: 0\r\n", b""))
        await asyncio.wait_for(endpoint.bad.get(), WAIT)
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
    finally:
        writer.close()


async def test_idle_tcp_connection_is_closed() -> None:
    endpoint = Endpoint(idle_timeout=0.05)
    await endpoint.transports.start([ListenAddress("tcp", "127.0.0.1", 0)])
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port("tcp"))
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        writer.close()
    finally:
        await endpoint.transports.stop()


async def test_a_connection_a_dialog_holds_open_outlives_the_idle_timeout() -> None:
    endpoint = Endpoint(idle_timeout=0.05)
    await endpoint.transports.start([ListenAddress("tcp", "127.0.0.1", 0)])
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port("tcp"))
        writer.write(options(transport="TCP"))
        _, peer = await endpoint.next_request()
        endpoint.transports.hold_open(peer, True)
        with pytest.raises(TimeoutError):  # ten idle timeouts pass, and it stays open
            await asyncio.wait_for(reader.read(), 0.5)
        endpoint.transports.hold_open(peer, False)
        assert await asyncio.wait_for(reader.read(), WAIT) == b""  # then idleness closes it
        writer.close()
    finally:
        await endpoint.transports.stop()


def self_signed_contexts(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1, and a client context trusting only it."""
    files = self_signed(directory)
    return server_context(str(files.cert), str(files.key)), ssl.create_default_context(cafile=files.cert)


async def test_tls_request_and_response_round_trip(tmp_path: Path) -> None:
    listening, trusting = self_signed_contexts(tmp_path)
    callee, caller = Endpoint(tls_server=listening), Endpoint(tls_client=trusting)
    await callee.transports.start([ListenAddress("tls", "127.0.0.1", 0)])
    try:
        request = parse_message(options(transport="TLS"))
        await caller.transports.send(request, Peer("tls", "127.0.0.1", callee.port("tls")))
        received, peer = await callee.next_request()
        await callee.transports.send(response_to(received, 200), peer)
        answer, _ = await caller.next()
        assert isinstance(answer, SipResponse) and answer.status == 200
    finally:
        await caller.transports.stop()
        await callee.transports.stop()


@contextlib.asynccontextmanager
async def tls_callee(tmp_path: Path, **names: str | None) -> AsyncIterator[tuple[Endpoint, Path]]:
    """An endpoint listening for TLS with a self-signed certificate (for `names`: ip=, dns=), and the
    certificate's file."""
    files = self_signed(tmp_path / "cert", **names)
    callee = Endpoint(tls_server=server_context(str(files.cert), str(files.key)))
    await callee.transports.start([ListenAddress("tls", "127.0.0.1", 0)])
    try:
        yield callee, files.cert
    finally:
        await callee.transports.stop()


async def test_a_self_signed_certificate_is_refused_by_default_saying_how_to_accept_it(
    tmp_path: Path,
) -> None:
    caller = Endpoint()  # the system CAs: they do not know the test's certificate
    async with tls_callee(tmp_path) as (callee, _):
        with pytest.raises(TransportError) as refused:
            await caller.transports.send(
                parse_message(options(transport="TLS")), Peer("tls", "127.0.0.1", callee.port("tls"))
            )
    await caller.transports.stop()
    assert "TLS certificate of 127.0.0.1 was refused" in str(refused.value)
    assert "(self-signed certificate)" in str(refused.value) and "tlsVerify false" in str(refused.value)


async def test_a_peer_without_tls_verify_accepts_a_self_signed_certificate(tmp_path: Path) -> None:
    caller = Endpoint()
    async with tls_callee(tmp_path) as (callee, _):
        peer = Peer("tls", "127.0.0.1", callee.port("tls"), tls_verify=False)
        await caller.transports.send(parse_message(options(transport="TLS")), peer)
        received, _ = await callee.next_request()
    await caller.transports.stop()
    assert received.method == "OPTIONS"


async def test_the_certificate_is_checked_against_the_server_name_not_the_address(tmp_path: Path) -> None:
    async with tls_callee(tmp_path, ip=None, dns="pbx.test") as (callee, cert):
        caller = Endpoint(tls_client=ssl.create_default_context(cafile=cert))
        port = callee.port("tls")
        try:
            with pytest.raises(TransportError, match="refused"):
                await caller.transports.send(
                    parse_message(options(transport="TLS")), Peer("tls", "127.0.0.1", port)
                )
            named = Peer("tls", "127.0.0.1", port, server_name="pbx.test")
            await caller.transports.send(parse_message(options(transport="TLS")), named)
            received, _ = await callee.next_request()
        finally:
            await caller.transports.stop()
    assert received.method == "OPTIONS"


async def test_a_connection_opened_without_the_check_is_not_reused_for_a_peer_that_wants_it(
    tmp_path: Path,
) -> None:
    caller = Endpoint()
    async with tls_callee(tmp_path) as (callee, _):
        port = callee.port("tls")
        await caller.transports.send(
            parse_message(options(transport="TLS")), Peer("tls", "127.0.0.1", port, tls_verify=False)
        )
        await callee.next_request()
        with pytest.raises(TransportError, match="refused"):
            await caller.transports.send(
                parse_message(options(transport="TLS")), Peer("tls", "127.0.0.1", port)
            )
    await caller.transports.stop()


async def test_resolving_a_peer_keeps_its_name_for_the_certificate_check() -> None:
    resolved = await resolve_peer(Peer("tls", "localhost", 5061, tls_verify=False))
    assert (resolved.host, resolved.server_name, resolved.tls_verify) == ("127.0.0.1", "localhost", False)
