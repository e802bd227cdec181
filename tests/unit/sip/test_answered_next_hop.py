"""Where an outgoing call's ACK and BYE go once the callee answered."""

from __future__ import annotations

from app.sip.dialog import Dialog, LocalAddress
from app.sip.message import SipRequest, SipResponse, parse_message
from app.sip.outgoing import answered_next_hop
from app.sip.transport import Peer

HERE = LocalAddress("udp", "192.0.2.10", 5060)
DIALLED = Peer("udp", "93.184.216.34", 5060)
INVITE = (
    "INVITE sip:bob@93.184.216.34 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKo1\r\n"
    "From: <sip:agent@192.0.2.10>;tag=ours\r\nTo: <sip:bob@93.184.216.34>\r\nCall-ID: hop-1\r\n"
    "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
)


def dialog_answered_with(extra: str) -> Dialog:
    invite = parse_message(INVITE.encode())
    answer = parse_message(
        (
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKo1\r\n"
            "From: <sip:agent@192.0.2.10>;tag=ours\r\nTo: <sip:bob@93.184.216.34>;tag=bob\r\n"
            f"Call-ID: hop-1\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(invite, SipRequest) and isinstance(answer, SipResponse)
    return Dialog.as_uac(invite, answer, DIALLED, HERE)


async def test_a_public_contact_is_where_requests_go() -> None:
    dialog = dialog_answered_with("Contact: <sip:bob@93.184.216.40:5080>\r\n")
    assert await answered_next_hop(dialog, DIALLED) == Peer("udp", "93.184.216.40", 5080)


async def test_a_private_contact_behind_a_public_address_falls_back_to_where_we_dialled() -> None:
    dialog = dialog_answered_with("Contact: <sip:bob@10.0.0.5:5062>\r\n")
    assert await answered_next_hop(dialog, DIALLED) == DIALLED


async def test_a_route_set_wins_over_the_contact() -> None:
    dialog = dialog_answered_with(
        "Record-Route: <sip:proxy.example.com;lr>\r\nContact: <sip:bob@93.184.216.40>\r\n"
    )
    assert await answered_next_hop(dialog, DIALLED) == Peer("udp", "proxy.example.com", 5060)


async def test_over_tls_requests_stay_on_the_connection_we_dialled() -> None:
    dialled = Peer("tls", "93.184.216.34", 5061, tls_verify=False, server_name="pbx.example.com")
    dialog = dialog_answered_with("Contact: <sip:bob@93.184.216.40:5061;transport=tls>\r\n")
    hop = await answered_next_hop(dialog, dialled)
    assert (hop, hop.tls_verify, hop.server_name) == (dialled, False, "pbx.example.com")


async def test_a_route_reached_over_tls_keeps_the_calls_verification_choice() -> None:
    dialled = Peer("tls", "93.184.216.34", 5061, tls_verify=False)
    dialog = dialog_answered_with("Record-Route: <sip:proxy.example.com;transport=tls;lr>\r\n")
    hop = await answered_next_hop(dialog, dialled)
    assert (hop, hop.tls_verify) == (Peer("tls", "proxy.example.com", 5061), False)
