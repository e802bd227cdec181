"""SIP transports (RFC 3261 §18, RFC 3581, RFC 5923-style reuse): UDP sockets, TCP and TLS connections.

Incoming bytes become parsed messages handed to `on_message`; malformed ones go to `on_bad`. Requests get
their top Via stamped with `received`/`rport`; responses are routed back by that Via (§18.2.2). TLS
connections we open check the certificate against the name dialled (`Peer.server_name`, sent as SNI)
unless the peer says `tls_verify=False`; a refused certificate is a TransportError saying so. The one
optional `on_message_logged` observer sees every message parsed ("in") and every message sent ("out").
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from app.sip.message import (
    Headers,
    SipMessage,
    SipParseError,
    SipRequest,
    SipResponse,
    StreamFramer,
    Via,
    parse_message,
    parse_via,
    serialize,
)
from app.sip.tls import client_context, refusal_reason

log = logging.getLogger(__name__)

TRANSPORTS = ("udp", "tcp", "tls")
RELIABLE = frozenset({"tcp", "tls"})
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
#: RFC 3261 §18.1.1: requests larger than this (200 bytes under a 1500-byte MTU) should not go over UDP.
UDP_MTU_LIMIT = 1300
#: A peer that refused TCP for a large request gets large requests over UDP for this long.
NO_TCP_FOR_S = 300.0
#: Peers remembered as refusing TCP (beyond this many, the memory starts over).
MAX_NO_TCP = 1024
IDLE_TIMEOUT = 180.0
CONNECT_TIMEOUT = 5.0


class TransportError(OSError):
    """A message could not be sent (no route, connection refused or lost, oversized datagram)."""


@dataclass(frozen=True)
class Peer:
    """The far end of one hop: where a message came from, or where one goes."""

    transport: str  # "udp" | "tcp" | "tls"
    host: str
    port: int
    #: The URI said `;transport=udp`: a large request is not moved to TCP (RFC 3261 §18.1.1) for it.
    udp_only: bool = field(default=False, compare=False)
    #: TLS: check the far end's certificate when connecting to it (not part of the address: a connection
    #: is found by address, and one opened without the check is not reused by a peer that wants it).
    tls_verify: bool = field(default=True, compare=False)
    #: TLS: the name the certificate must carry (SNI) when `host` is the address it resolved to.
    server_name: str | None = field(default=None, compare=False)

    @property
    def reliable(self) -> bool:
        return self.transport in RELIABLE


@dataclass(frozen=True)
class ListenAddress:
    transport: str
    host: str
    port: int


def parse_listen(spec: str) -> list[ListenAddress]:
    """Parse `udp:0.0.0.0:5060,tcp:[::1]:5070` (empty → no listeners); ValueError when malformed."""
    listens = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        transport, _, rest = item.partition(":")
        host, _, port_text = rest.rpartition(":")
        transport = transport.lower()
        if transport not in TRANSPORTS:
            raise ValueError(f"{item!r}: transport must be one of {', '.join(TRANSPORTS)}")
        host = host.removeprefix("[").removesuffix("]")
        if not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ValueError(f"{item!r}: expected transport:host:port")
        listens.append(ListenAddress(transport, host, int(port_text)))
    return listens


MessageHandler = Callable[[SipMessage, Peer], None]
BadHandler = Callable[[bytes, Peer, str], None]
#: ("in" | "out", the message, the peer it came from or went to); must not block (app.sip.message_log).
MessageObserver = Callable[[str, SipMessage, Peer], None]


class SipTransports:
    """Every listening socket and open connection of one user agent."""

    def __init__(
        self,
        on_message: MessageHandler,
        on_bad: BadHandler | None = None,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        tls_server: ssl.SSLContext | None = None,
        tls_client: ssl.SSLContext | None = None,
        tls_client_unverified: ssl.SSLContext | None = None,
    ) -> None:
        self._on_message = on_message
        self._on_bad = on_bad
        self._idle_timeout = idle_timeout
        self._tls_server = tls_server
        #: For peers with `tls_verify` (default: system CAs, hostname checked) and for those without.
        self._tls_clients = {True: tls_client, False: tls_client_unverified}
        self._locals: dict[str, ListenAddress] = {}
        self._udp: _UdpProtocol | None = None  # the first UDP listener: where UDP messages go out from
        self._udp_listeners: list[_UdpProtocol] = []
        self._servers: list[asyncio.Server] = []
        self._connections: dict[Peer, _Connection] = {}
        self._connecting: dict[tuple[Peer, bool], asyncio.Future[_Connection]] = {}
        self.on_message_logged: MessageObserver | None = None
        #: Where a TCP connection for a large request failed, and until when (loop time) they go over UDP.
        self._no_tcp: dict[tuple[str, int], float] = {}

    async def start(self, listens: list[ListenAddress]) -> None:
        """Bind every listen address; port 0 binds an ephemeral port (see `local`)."""
        loop = asyncio.get_running_loop()
        for listen in listens:
            if listen.transport == "udp":
                _, protocol = await loop.create_datagram_endpoint(
                    lambda: _UdpProtocol(self), local_addr=(listen.host, listen.port)
                )
                self._udp = self._udp or protocol
                self._udp_listeners.append(protocol)
                bound = protocol.sockname
            else:
                context = self._tls_server if listen.transport == "tls" else None
                if listen.transport == "tls" and context is None:
                    raise ValueError("a tls listen needs tls_server (an ssl.SSLContext)")
                server = await loop.create_server(
                    lambda transport=listen.transport: _StreamProtocol(self, transport, inbound=True),
                    listen.host,
                    listen.port,
                    ssl=context,
                )
                self._servers.append(server)
                bound = server.sockets[0].getsockname()
            self._locals.setdefault(listen.transport, ListenAddress(listen.transport, listen.host, bound[1]))

    def local(self, transport: str) -> ListenAddress:
        """The bound address of the first listener of `transport` (port 0 resolved); KeyError if none."""
        return self._locals[transport.lower()]

    async def send(self, message: SipMessage, peer: Peer) -> None:
        """Send a request to `peer`, or a response back along its top Via; TransportError on failure."""
        data = serialize(message)
        if isinstance(message, SipResponse):
            await self._send_response(data, message, peer)
        elif peer.reliable:
            connection = await self._connection_to(peer)
            connection.write(data)
        elif len(data) <= UDP_MTU_LIMIT or not await self._sent_over_tcp(message, peer):
            await self._send_udp(data, peer.host, peer.port)
        self._log("out", message, peer)

    def _log(self, direction: str, message: SipMessage, peer: Peer) -> None:
        observer = self.on_message_logged
        if observer is None:
            return
        try:
            observer(direction, message, peer)
        except Exception:  # a logging bug must never cost a call its signalling
            log.exception("SIP message observer failed")

    async def send_keepalive(self, peer: Peer) -> None:
        """RFC 5626 §3.5.1: a CRLF CRLF ping over the TCP/TLS connection to `peer` (opened if needed);
        TransportError when it cannot be written."""
        if not peer.reliable:
            raise ValueError("CRLF keep-alives are for connections (TCP/TLS)")
        connection = await self._connection_to(peer)
        connection.write(b"\r\n\r\n")

    def answer_bad_request(self, data: bytes, peer: Peer, reason: str) -> bool:
        """Answer a malformed request 400 when its Via/From/To/Call-ID/CSeq can be read; True if sent."""
        response = bad_request_response(data, peer, reason)
        if response is None:
            return False
        task = asyncio.ensure_future(self.send(response, peer))
        task.add_done_callback(_log_failure)
        return True

    def hold_open(self, peer: Peer, held: bool) -> None:
        """A dialog starts (`held`) or stops using the TCP/TLS connection to `peer`: while any does, the
        connection is not closed for idleness (a PBX that sends nothing for minutes still gets our BYE)."""
        connection = self._connections.get(peer)
        if connection is not None:
            connection.dialogs = max(0, connection.dialogs + (1 if held else -1))

    async def stop(self) -> None:
        """Close every socket and connection."""
        for server in self._servers:
            server.close()
        for connection in list(self._connections.values()):
            connection.close()
        for pending in self._connecting.values():
            pending.cancel()
        for udp in self._udp_listeners:
            udp.close()
        self._udp_listeners.clear()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()
        self._udp = None

    # --- large requests (RFC 3261 §18.1.1) --------------------------------------------------------

    async def _sent_over_tcp(self, request: SipRequest, peer: Peer) -> bool:
        """A request too large for UDP goes over TCP to the same address, its top Via saying so; False
        (send it over UDP after all, as the RFC says) when the URI asked for UDP or TCP cannot connect."""
        now = asyncio.get_running_loop().time()
        if peer.udp_only or self._no_tcp.get((peer.host, peer.port), 0.0) > now:
            return False
        tcp = Peer("tcp", peer.host, peer.port)
        try:
            connection = await self._connection_to(tcp)
        except TransportError as exc:
            log.info("a large %s goes over UDP: %s", request.method, exc)
            if len(self._no_tcp) >= MAX_NO_TCP:
                self._no_tcp.clear()
            self._no_tcp[(peer.host, peer.port)] = now + NO_TCP_FOR_S
            return False
        tcp_port = self._locals["tcp"].port if "tcp" in self._locals else None
        connection.write(serialize(via_over(request, "TCP", tcp_port)))
        return True

    # --- responses (RFC 3261 §18.2.2, RFC 3581 §4) -----------------------------------------------

    async def _send_response(self, data: bytes, response: SipResponse, peer: Peer) -> None:
        via = response.top_via
        if peer.reliable:
            connection = self._connections.get(peer)
            if connection is not None and connection.open:
                connection.write(data)
                return
            host = via.params.get("received") or via.host
            port = via.port or DEFAULT_PORTS[peer.transport]
            connection = await self._connection_to(Peer(peer.transport, _unbracket(host), port))
            connection.write(data)
            return
        host, port = response_destination(via)
        await self._send_udp(data, host, port)

    # --- UDP -------------------------------------------------------------------------------------

    async def _send_udp(self, data: bytes, host: str, port: int) -> None:
        if self._udp is None:
            raise TransportError("no UDP listener to send from")
        address = await _resolve(_unbracket(host), port, self._udp.family)
        try:
            self._udp.sendto(data, address)
        except OSError as exc:
            raise TransportError(f"UDP send to {host}:{port} failed: {exc}") from exc

    # --- TCP/TLS connections ---------------------------------------------------------------------

    async def _connection_to(self, peer: Peer) -> _Connection:
        connection = self._connections.get(peer)
        if connection is not None and connection.serves(peer):
            return connection
        key = (peer, peer.tls_verify)  # a connect without the check is no connection for a peer that wants it
        pending = self._connecting.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._connect(peer))
            self._connecting[key] = pending
            pending.add_done_callback(lambda _: self._connecting.pop(key, None))
        return await asyncio.shield(pending)

    async def _connect(self, peer: Peer) -> _Connection:
        loop = asyncio.get_running_loop()
        context: ssl.SSLContext | None = None
        server_name = peer.server_name or _unbracket(peer.host)
        if peer.transport == "tls":
            context = self._tls_clients[peer.tls_verify]
            if context is None:  # loading the system CAs once, on the first TLS connection
                context = self._tls_clients[peer.tls_verify] = client_context(peer.tls_verify)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                _, protocol = await loop.create_connection(
                    lambda: _StreamProtocol(self, peer.transport, inbound=False),
                    _unbracket(peer.host),
                    peer.port,
                    ssl=context,
                    server_hostname=server_name if context else None,
                )
        except ssl.SSLCertVerificationError as exc:
            raise TransportError(refusal_reason(exc, server_name)) from exc
        except (OSError, TimeoutError) as exc:
            raise TransportError(
                f"cannot connect to {peer.transport}:{peer.host}:{peer.port}: {exc}"
            ) from exc
        assert protocol.connection is not None
        protocol.connection.verified = peer.transport != "tls" or peer.tls_verify
        # Also reachable under the address we dialled (a hostname, or the port the peer listens on), in
        # place of a connection there that this peer could not use.
        existing = self._connections.get(peer)
        if existing is None or not existing.serves(peer):
            self._connections[peer] = protocol.connection
        protocol.connection.aliases.add(peer)
        return protocol.connection

    def _alias(self, connection: _Connection, via: Via) -> None:
        """RFC 5923: a Via with `alias` makes the connection reachable as its sent-by address."""
        if "alias" not in via.params:
            return
        alias = Peer(
            connection.peer.transport,
            _unbracket(via.host),
            via.port or DEFAULT_PORTS[connection.peer.transport],
        )
        if alias not in self._connections:
            self._connections[alias] = connection
            connection.aliases.add(alias)

    def _register(self, connection: _Connection) -> None:
        self._connections[connection.peer] = connection

    def _unregister(self, connection: _Connection) -> None:
        for key in (connection.peer, *connection.aliases):
            if self._connections.get(key) is connection:
                del self._connections[key]

    # --- receiving -------------------------------------------------------------------------------

    def _received(self, data: bytes, peer: Peer, connection: _Connection | None = None) -> None:
        try:
            message = parse_message(data)
            if isinstance(message, SipRequest):
                if connection is not None:
                    self._alias(connection, message.top_via)
                stamp_received(message.headers, peer)
        except SipParseError as exc:
            self._bad(data, peer, str(exc))
            return
        self._log("in", message, peer)
        try:
            self._on_message(message, peer)
        except Exception:
            log.exception("SIP message handler failed for a message from %s", peer)

    def _bad(self, data: bytes, peer: Peer, reason: str) -> None:
        log.info("malformed SIP message from %s: %s", peer, reason)
        if self._on_bad is not None:
            try:
                self._on_bad(data, peer, reason)
            except Exception:
                log.exception("SIP bad-message handler failed")


def stamp_received(headers: Headers, peer: Peer) -> None:
    """RFC 3261 §18.2.1 + RFC 3581 §4: note the source address and port in a request's top Via."""
    vias = headers.get_all("Via")
    via = parse_via(vias[0])
    params = dict(via.params)
    rport_requested = "rport" in params
    # RFC 3581: with rport, received is added even when it equals the sent-by host.
    if rport_requested or _unbracket(via.host) != peer.host:
        params["received"] = peer.host
    if rport_requested:
        params["rport"] = str(peer.port)
    if params == via.params:
        return
    headers.set("Via", str(replace(via, params=params)))
    for value in vias[1:]:
        headers.add("Via", value)


def via_over(request: SipRequest, transport: str, port: int | None) -> SipRequest:
    """A copy of `request` whose top Via names `transport` (and our `port` on it, when we listen there):
    RFC 3261 §18.1.1 wants the Via to say how the request really went."""
    vias = request.headers.get_all("Via")
    top = parse_via(vias[0])
    headers = request.headers.copy()
    headers.set("Via", str(replace(top, transport=transport, port=port or top.port)))
    for value in vias[1:]:
        headers.add("Via", value)
    return replace(request, headers=headers)


def response_destination(via: Via) -> tuple[str, int]:
    """Where a UDP response goes: `received` (else sent-by host), at `rport` (else sent-by port)."""
    host = via.params.get("received") or via.host
    rport = via.params.get("rport")
    if rport is not None and rport.isdigit():
        return host, int(rport)
    return host, via.port or DEFAULT_PORTS["udp"]


_BAD_REQUEST_HEADERS = {"via": "Via", "v": "Via", "from": "From", "f": "From", "to": "To", "t": "To"}
_BAD_REQUEST_HEADERS |= {"call-id": "Call-ID", "i": "Call-ID", "cseq": "CSeq"}


def bad_request_response(data: bytes, peer: Peer, reason: str) -> SipResponse | None:
    """A 400 for a malformed request whose Via, From, To, Call-ID and CSeq lines are present, else None.

    Never answers an ACK (RFC 3261 §17) or anything that is not a request.
    """
    head = data.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"\n").decode("utf-8", "replace")
    start, *lines = head.split("\n")
    parts = start.split(" ")
    if len(parts) != 3 or parts[2].strip().upper() != "SIP/2.0" or parts[0].upper() == "ACK":
        return None
    headers = Headers()
    for line in lines:
        name, colon, value = line.partition(":")
        canonical = _BAD_REQUEST_HEADERS.get(name.strip().lower())
        if colon and canonical:
            headers.add(canonical, value.strip())
    if any(name not in headers for name in ("Via", "From", "To", "Call-ID", "CSeq")):
        return None
    try:
        stamp_received(headers, peer)
    except SipParseError:
        return None
    phrase = "Bad Request - " + " ".join(reason.split())[:100] if reason else "Bad Request"
    return SipResponse(400, phrase, headers)


def _unbracket(host: str) -> str:
    return host.removeprefix("[").removesuffix("]")


async def resolve_peer(peer: Peer) -> Peer:
    """`peer` with its host looked up as an IPv4 address (an address stays as it is; RFC 3263's SRV and
    NAPTR are not consulted), the name kept for TLS (SNI and the certificate check); TransportError when
    it does not resolve."""
    name = _unbracket(peer.host)
    host, port = await _resolve(name, peer.port, socket.AF_INET)
    return replace(peer, host=host, port=port, server_name=peer.server_name or name)


async def _resolve(host: str, port: int, family: int) -> tuple[str, int]:
    try:
        ipaddress.ip_address(host)
        return host, port
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise TransportError(f"cannot resolve {host}: {exc}") from exc
    return infos[0][4][0], port


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.info("SIP send failed: %s", task.exception())


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransports) -> None:
        self._owner = owner
        # Python 3.11's selector transport is not an asyncio.DatagramTransport subclass: no isinstance.
        self._transport: asyncio.BaseTransport | None = None
        self.sockname: tuple[str, int] = ("", 0)
        self.family = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        sock = transport.get_extra_info("socket")
        self.family = sock.family
        self.sockname = transport.get_extra_info("sockname")[:2]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if not data.strip():  # CRLF keep-alive
            return
        self._owner._received(data, Peer("udp", str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.info("UDP error: %s", exc)

    def sendto(self, data: bytes, address: tuple[str, int]) -> None:
        if self._transport is None or self._transport.is_closing():
            raise TransportError("UDP socket closed")
        self._transport.sendto(data, address)  # type: ignore[attr-defined]

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


@dataclass(eq=False)
class _Connection:
    """One TCP/TLS connection: framed reads, idle close, and the peers it is reachable as."""

    owner: SipTransports
    transport: asyncio.Transport
    peer: Peer
    aliases: set[Peer] = field(default_factory=set)
    framer: StreamFramer = field(default_factory=StreamFramer)
    open: bool = True
    _last_active: float = 0.0
    _idle: asyncio.TimerHandle | None = None
    #: Live dialogs whose in-dialog requests go over this connection: it is not closed for idleness.
    dialogs: int = 0
    #: False for a TLS connection we opened without checking the certificate (`tls_verify` off): a
    #: request to a peer that wants the check opens its own. Connections the far end opened count as
    #: checked: they are how it reaches us, and how our answers and its dialogs' requests go back.
    verified: bool = True

    def start(self) -> None:
        self.owner._register(self)
        self._touch()

    def serves(self, peer: Peer) -> bool:
        """Whether a request to `peer` may go over this connection (open; checked when `peer` wants it)."""
        return self.open and (self.verified or not peer.tls_verify)

    def write(self, data: bytes) -> None:
        if not self.open or self.transport.is_closing():
            raise TransportError(f"connection to {self.peer} closed")
        self.transport.write(data)
        self._touch()

    def feed(self, data: bytes) -> None:
        self._touch()
        pings = self.framer.pings
        try:
            messages = self.framer.feed(data)
        except SipParseError as exc:
            self.owner._bad(data, self.peer, str(exc))
            self.close()
            return
        if self.framer.pings > pings and not self.transport.is_closing():
            self.transport.write(b"\r\n" * (self.framer.pings - pings))  # RFC 5626 §3.5.1 pong
        for message in messages:
            self.owner._received(message, self.peer, self)

    def close(self) -> None:
        if self.open:
            self.transport.close()
        self.closed()

    def closed(self) -> None:
        self.open = False
        if self._idle is not None:
            self._idle.cancel()
        self.owner._unregister(self)

    def _touch(self) -> None:
        loop = asyncio.get_running_loop()
        self._last_active = loop.time()
        if self._idle is None:
            self._idle = loop.call_later(self.owner._idle_timeout, self._check_idle)

    def _check_idle(self) -> None:
        loop = asyncio.get_running_loop()
        remaining = self._last_active + self.owner._idle_timeout - loop.time()
        if self.dialogs > 0:  # a live call's requests (our BYE) must still reach the far end this way
            remaining = self.owner._idle_timeout
        if remaining > 0:
            self._idle = loop.call_later(remaining, self._check_idle)
            return
        log.debug("closing idle SIP connection to %s", self.peer)
        self._idle = None
        self.close()


class _StreamProtocol(asyncio.Protocol):
    def __init__(self, owner: SipTransports, transport: str, *, inbound: bool) -> None:
        self._owner = owner
        self._transport_name = transport
        self.inbound = inbound
        self.connection: _Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No isinstance check: uvloop's TCP transport (what `serve` runs on) is no asyncio.Transport.
        host, port = transport.get_extra_info("peername")[:2]
        self.connection = _Connection(
            self._owner,
            transport,  # type: ignore[arg-type]
            Peer(self._transport_name, host, port),
        )
        self.connection.start()

    def data_received(self, data: bytes) -> None:
        if self.connection is not None:
            self.connection.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connection is not None:
            self.connection.closed()
