"""A SIP dialog (RFC 3261 §12): the two tags, the CSeq counters, the route set and the remote target.

It builds the in-dialog requests callbridge sends (BYE, INFO, the ACK for a 2xx, later REFER) and checks
the ones the far end sends. Where a request goes is the dialog's `peer`: the first loose route when there is
a route set, else the address the far end's messages came from (symmetric signalling: a PBX behind NAT
puts an address in Contact that cannot be reached, while its source address can).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.sip.message import Headers, NameAddr, SipRequest, SipResponse, SipUri, new_branch, parse_name_addr
from app.sip.transport import DEFAULT_PORTS, Peer

MAX_FORWARDS = "70"
USER = "callbridge"


@dataclass(frozen=True, slots=True)
class LocalAddress:
    """Where callbridge is reached over one transport: the host and port put in Via and Contact."""

    transport: str  # "udp" | "tcp" | "tls"
    host: str
    port: int
    #: A sips: dialog (RFC 3261 §8.1.1.8, §12.1.1): our Contact is a sips: URI too.
    secure: bool = False

    def via(self) -> str:
        """A Via for a new request (a fresh branch; `rport` asks for RFC 3581 symmetric responses)."""
        return f"SIP/2.0/{self.transport.upper()} {self.host}:{self.port};branch={new_branch()};rport"

    def contact(self, user: str = USER) -> str:
        """Our Contact: `;transport=` for TCP and TLS, a sips: URI (TLS implied, RFC 5630) when secure."""
        if self.secure:
            return f"<sips:{user}@{self.host}:{self.port}>"
        suffix = "" if self.transport == "udp" else f";transport={self.transport}"
        return f"<sip:{user}@{self.host}:{self.port}{suffix}>"


def peer_for_uri(uri: SipUri, *, tls_verify: bool = True) -> Peer:
    """The transport address a SIP URI names (RFC 3263's DNS steps beyond A records are not taken);
    `tls_verify` False: a TLS connection to it accepts any certificate (a self-signed PBX)."""
    transport = uri.transport
    default_port = DEFAULT_PORTS.get(transport, DEFAULT_PORTS["udp"])
    udp_only = (uri.params.get("transport") or "").lower() == "udp"
    return Peer(transport, uri.host.strip("[]"), uri.port or default_port, udp_only, tls_verify=tls_verify)


@dataclass
class Dialog:
    """One dialog, from callbridge's side: `local` is us, `remote` the far end."""

    call_id: str
    local: NameAddr  # with our tag
    remote: NameAddr  # with theirs
    remote_target: SipUri
    route_set: list[NameAddr]
    peer: Peer
    local_cseq: int
    #: Where we are, for Via and Contact.
    here: LocalAddress
    remote_cseq: int | None = None

    @classmethod
    def as_uas(cls, invite: SipRequest, local_tag: str, peer: Peer, here: LocalAddress) -> Dialog:
        """The dialog an incoming INVITE creates when we answer it (with `local_tag` in To)."""
        remote_contact = invite.contact
        return cls(
            call_id=invite.call_id,
            local=invite.to.with_tag(local_tag),
            remote=invite.from_,
            remote_target=remote_contact.uri if remote_contact else invite.from_.uri,
            route_set=[parse_name_addr(v) for v in invite.headers.get_all("Record-Route")],
            peer=peer,
            local_cseq=0,
            here=here,
            remote_cseq=invite.cseq[0],
        )

    @classmethod
    def as_uac(cls, invite: SipRequest, answer: SipResponse, peer: Peer, here: LocalAddress) -> Dialog:
        """The dialog a 2xx to our INVITE creates (route set from Record-Route, reversed)."""
        remote_contact = answer.contact
        routes = [parse_name_addr(v) for v in reversed(answer.headers.get_all("Record-Route"))]
        return cls(
            call_id=invite.call_id,
            local=invite.from_,
            remote=answer.to,
            remote_target=remote_contact.uri if remote_contact else invite.uri,
            route_set=routes,
            peer=peer,
            local_cseq=invite.cseq[0],
            here=here,
        )

    def next_hop(self, source: Peer) -> Peer:
        """Where in-dialog requests go: the first route when there is a route set, else `source` (the
        address the far end's requests came from: a PBX behind NAT puts an unreachable one in Contact)."""
        if not self.route_set:
            return source
        return peer_for_uri(self.route_set[0].uri)

    @property
    def key(self) -> tuple[str, str, str]:
        """(Call-ID, local tag, remote tag): how requests find their dialog."""
        return self.call_id, self.local.tag or "", self.remote.tag or ""

    def request(
        self,
        method: str,
        body: bytes = b"",
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> SipRequest:
        """A new in-dialog request (CSeq + 1), addressed along the route set to the remote target."""
        self.local_cseq += 1
        return self._build(method, self.local_cseq, body, content_type, headers)

    def ack(self) -> SipRequest:
        """The ACK for the 2xx to our INVITE: its CSeq number, a new branch (RFC 3261 §13.2.2.4)."""
        return self._build("ACK", self.local_cseq, b"", None, None)

    def accepts(self, request: SipRequest) -> bool:
        """Whether an in-dialog request's CSeq is in order (a lower one is answered 500)."""
        number = request.cseq[0]
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_cseq is not None and number <= self.remote_cseq:
            return False
        self.remote_cseq = number
        return True

    def _build(
        self,
        method: str,
        cseq: int,
        body: bytes,
        content_type: str | None,
        headers: dict[str, str] | None,
    ) -> SipRequest:
        routes = list(self.route_set)
        target = self.remote_target
        if routes and "lr" not in routes[0].uri.params:
            # A strict router (RFC 2543): it goes in the Request-URI, the remote target last in Route.
            target = routes.pop(0).uri
            routes.append(NameAddr(self.remote_target))
        h = Headers()
        h.add("Via", self.here.via())
        h.add("Max-Forwards", MAX_FORWARDS)
        for route in routes:
            h.add("Route", str(route))
        h.add("From", str(self.local))
        h.add("To", str(self.remote))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{cseq} {method}")
        if method != "ACK":
            h.add("Contact", self.here.contact())
        for name, value in (headers or {}).items():
            h.add(name, value)
        if content_type:
            h.add("Content-Type", content_type)
        return SipRequest(method, target, h, body)
