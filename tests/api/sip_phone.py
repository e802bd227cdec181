"""A raw SIP endpoint for tests: writes requests by hand, reads every message the service sends back.

It speaks UDP on a loopback address of its own (127.0.0.2 is "another host" to the service's CIDR check) and
carries RTP with the project's RtpSession. It checks nothing itself: the tests do.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field

from app.sip.message import SipMessage, SipRequest, SipResponse, parse_message, serialize

WAIT_S = 10.0


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.messages: asyncio.Queue[SipMessage] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.messages.put_nowait(parse_message(data))


def sdp_offer(host: str, port: int, formats: str = "0 101", rtpmaps: str = "") -> bytes:
    """An audio offer: PCMU and telephone-event unless told otherwise."""
    lines = [
        "v=0",
        f"o=phone 1 1 IN IP4 {host}",
        "s=-",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {formats}",
        *(rtpmaps or "a=rtpmap:0 PCMU/8000\na=rtpmap:101 telephone-event/8000\na=fmtp:101 0-16").split("\n"),
        "a=ptime:20",
        "a=sendrecv",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


@dataclass
class Dialed:
    """What an INVITE of ours established (the service's To tag, our From tag)."""

    call_id: str
    from_tag: str
    to_tag: str
    user: str
    cseq: int = 1
    extra: dict[str, str] = field(default_factory=dict)


class SipPhone:
    """One test phone on `host`, talking to the service at `server` (host, port)."""

    def __init__(self, host: str, server: tuple[str, int]) -> None:
        self.host = host
        self.server = server
        self._inbox = _Inbox()
        self.port = 0

    async def open(self) -> SipPhone:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self._inbox, local_addr=(self.host, 0))
        self.port = transport.get_extra_info("sockname")[1]
        return self

    def close(self) -> None:
        if self._inbox.transport is not None:
            self._inbox.transport.close()

    def send(self, message: SipMessage | str | bytes) -> None:
        if isinstance(message, str):
            message = message.encode()
        data = message if isinstance(message, bytes) else serialize(message)
        assert self._inbox.transport is not None
        self._inbox.transport.sendto(data, self.server)

    async def next(self) -> SipMessage:
        async with asyncio.timeout(WAIT_S):
            return await self._inbox.messages.get()

    async def response(self, method: str = "INVITE", final: bool = True) -> SipResponse:
        """The next response to `method` (the next final one unless `final` is False)."""
        async with asyncio.timeout(WAIT_S):
            while True:
                message = await self._inbox.messages.get()
                if (
                    isinstance(message, SipResponse)
                    and message.cseq[1] == method
                    and (not final or message.status >= 200)
                ):
                    return message

    async def request(self, method: str) -> SipRequest:
        """The next request the service sends us with `method`."""
        async with asyncio.timeout(WAIT_S):
            while True:
                message = await self._inbox.messages.get()
                if isinstance(message, SipRequest) and message.method == method:
                    return message

    # --- requests --------------------------------------------------------------------------------

    def invite(
        self, user: str, body: bytes, headers: dict[str, str] | None = None, branch: str | None = None
    ) -> Dialed:
        dialed = Dialed(secrets.token_hex(8), secrets.token_hex(4), "", user)
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        self.send(
            f"INVITE sip:{user}@{self.server[0]}:{self.server[1]} SIP/2.0\r\n"
            f"{self.via(branch)}"
            "Max-Forwards: 70\r\n"
            f'From: "Test Phone" <sip:+15550001111@{self.host}>;tag={dialed.from_tag}\r\n'
            f"To: <sip:{user}@{self.server[0]}>\r\n"
            f"Call-ID: {dialed.call_id}\r\n"
            "CSeq: 1 INVITE\r\n"
            f"Contact: <sip:phone@{self.host}:{self.port}>\r\n"
            f"{extra}"
            "Content-Type: application/sdp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        return dialed

    def ack(self, dialed: Dialed, to_tag: str) -> None:
        """The ACK for the 2xx to our INVITE (and remember the service's tag for what follows)."""
        dialed.to_tag = to_tag
        self._in_dialog("ACK", dialed, dialed.cseq)

    def cancel(self, dialed: Dialed, branch: str) -> None:
        self.send(
            f"CANCEL sip:{dialed.user}@{self.server[0]}:{self.server[1]} SIP/2.0\r\n"
            f"{self.via(branch)}"
            f"From: <sip:+15550001111@{self.host}>;tag={dialed.from_tag}\r\n"
            f"To: <sip:{dialed.user}@{self.server[0]}>\r\n"
            f"Call-ID: {dialed.call_id}\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
        )

    def bye(self, dialed: Dialed) -> None:
        dialed.cseq += 1
        self._in_dialog("BYE", dialed, dialed.cseq)

    def reinvite(self, dialed: Dialed, body: bytes) -> None:
        """A re-INVITE with a new offer (the ACK for its 200 is the test's to send)."""
        dialed.cseq += 1
        self._in_dialog("INVITE", dialed, dialed.cseq, "application/sdp", body.decode())

    def info_digit(self, dialed: Dialed, digit: str) -> None:
        dialed.cseq += 1
        body = f"Signal={digit}\r\nDuration=160\r\n"
        self._in_dialog("INFO", dialed, dialed.cseq, "application/dtmf-relay", body)

    def _in_dialog(
        self, method: str, dialed: Dialed, cseq: int, content_type: str | None = None, body: str = ""
    ) -> None:
        ctype = f"Content-Type: {content_type}\r\n" if content_type else ""
        self.send(
            f"{method} sip:callbridge@{self.server[0]}:{self.server[1]} SIP/2.0\r\n"
            f"{self.via()}"
            "Max-Forwards: 70\r\n"
            f"From: <sip:+15550001111@{self.host}>;tag={dialed.from_tag}\r\n"
            f"To: <sip:{dialed.user}@{self.server[0]}>;tag={dialed.to_tag}\r\n"
            f"Call-ID: {dialed.call_id}\r\nCSeq: {cseq} {method}\r\n{ctype}"
            f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
        )

    def answer(
        self,
        request: SipRequest,
        status: int,
        reason: str,
        to_tag: str = "phone",
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer a request the service sent us (its Via, From, To, Call-ID, CSeq copied)."""
        h = request.headers
        vias = "".join(f"Via: {v}\r\n" for v in h.get_all("Via"))
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        if body:
            extra += f"Contact: <sip:phone@{self.host}:{self.port}>\r\nContent-Type: application/sdp\r\n"
        self.send(
            (
                f"SIP/2.0 {status} {reason}\r\n{vias}From: {h.get('From')}\r\n"
                f"To: {h.get('To')}{'' if request.to.tag else ';tag=' + to_tag}\r\n"
                f"Call-ID: {request.call_id}\r\nCSeq: {h.get('CSeq')}\r\n{extra}"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )

    def via(self, branch: str | None = None) -> str:
        branch = branch or secrets.token_hex(6)
        return f"Via: SIP/2.0/UDP {self.host}:{self.port};branch=z9hG4bK{branch};rport\r\n"
