"""Dialogs: what an INVITE and its 2xx establish, and the in-dialog requests built from them."""

from __future__ import annotations

from app.sip.dialog import Dialog, LocalAddress, peer_for_uri
from app.sip.message import SipRequest, SipResponse, parse_message, parse_uri
from app.sip.transport import Peer

HERE = LocalAddress("udp", "192.0.2.10", 5060)
SOURCE = Peer("udp", "203.0.113.5", 5060)

INVITE = (
    "INVITE sip:agent_1@192.0.2.10 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKa1\r\n"
    "Record-Route: <sip:proxy1.example.com;lr>, <sip:proxy2.example.com;lr>\r\n"
    'From: "Alice" <sip:alice@example.com>;tag=from1\r\n'
    "To: <sip:agent_1@192.0.2.10>\r\n"
    "Call-ID: dialog-1\r\n"
    "CSeq: 7 INVITE\r\n"
    "Contact: <sip:alice@10.0.0.5:5062>\r\n"
    "Content-Length: 0\r\n\r\n"
)


def invite(text: str = INVITE) -> SipRequest:
    message = parse_message(text.encode())
    assert isinstance(message, SipRequest)
    return message


def test_an_answered_invite_gives_a_dialog_with_both_tags_and_the_callers_contact() -> None:
    dialog = Dialog.as_uas(invite(), "ours", SOURCE, HERE)
    assert dialog.key == ("dialog-1", "ours", "from1")
    assert str(dialog.remote_target) == "sip:alice@10.0.0.5:5062"
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:proxy1.example.com;lr",
        "sip:proxy2.example.com;lr",
    ]


def test_in_dialog_requests_count_their_own_cseq_and_carry_the_route_set() -> None:
    dialog = Dialog.as_uas(invite(), "ours", SOURCE, HERE)
    first, second = dialog.request("BYE"), dialog.request("INFO")
    assert (first.cseq, second.cseq) == ((1, "BYE"), (2, "INFO"))
    assert first.headers.get_all("Route") == ["<sip:proxy1.example.com;lr>", "<sip:proxy2.example.com;lr>"]
    assert str(first.uri) == "sip:alice@10.0.0.5:5062"
    assert first.from_.tag == "ours" and first.to.tag == "from1"


def test_requests_go_to_the_first_route_else_to_where_the_caller_sent_from() -> None:
    routed = Dialog.as_uas(invite(), "ours", SOURCE, HERE)
    direct = Dialog.as_uas(invite(INVITE.replace("Record-Route", "X-Unused")), "ours", SOURCE, HERE)
    assert routed.next_hop(SOURCE) == Peer("udp", "proxy1.example.com", 5060)
    assert direct.next_hop(SOURCE) == SOURCE  # not the unreachable 10.0.0.5 in Contact


def test_a_strict_router_gets_the_request_uri_and_the_target_goes_last_in_route() -> None:
    strict = INVITE.replace(
        "<sip:proxy1.example.com;lr>, <sip:proxy2.example.com;lr>", "<sip:old.example.com>"
    )
    bye = Dialog.as_uas(invite(strict), "ours", SOURCE, HERE).request("BYE")
    assert str(bye.uri) == "sip:old.example.com"
    assert bye.headers.get_all("Route") == ["<sip:alice@10.0.0.5:5062>"]


def test_a_request_with_an_old_cseq_is_out_of_order() -> None:
    dialog = Dialog.as_uas(invite(), "ours", SOURCE, HERE)
    later = invite(INVITE.replace("CSeq: 7 INVITE", "CSeq: 8 BYE").replace("INVITE sip", "BYE sip"))
    earlier = invite(INVITE.replace("CSeq: 7 INVITE", "CSeq: 6 BYE").replace("INVITE sip", "BYE sip"))
    assert dialog.accepts(later) and not dialog.accepts(earlier)


def test_the_2xx_to_our_invite_reverses_the_route_set_and_the_ack_keeps_the_invites_cseq() -> None:
    ours = invite(INVITE.replace("Record-Route", "X-Unused"))
    answer = parse_message(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKa1\r\n"
        b"Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>\r\n"
        b'From: "Alice" <sip:alice@example.com>;tag=from1\r\nTo: <sip:agent_1@192.0.2.10>;tag=callee\r\n'
        b"Call-ID: dialog-1\r\nCSeq: 7 INVITE\r\nContact: <sip:bob@198.51.100.7>\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert isinstance(answer, SipResponse)
    dialog = Dialog.as_uac(ours, answer, SOURCE, HERE)
    ack = dialog.ack()
    assert [str(r.uri) for r in dialog.route_set] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    assert ack.cseq == (7, "ACK") and str(ack.uri) == "sip:bob@198.51.100.7"
    assert dialog.request("BYE").cseq == (8, "BYE")


def test_a_uri_names_its_transport_and_default_port() -> None:
    assert peer_for_uri(parse_uri("sip:pbx.example.com;transport=tcp")) == Peer(
        "tcp", "pbx.example.com", 5060
    )
    assert peer_for_uri(parse_uri("sip:10.0.0.1:5080")) == Peer("udp", "10.0.0.1", 5080)


def test_a_sips_uri_and_a_tls_transport_default_to_port_5061() -> None:
    assert peer_for_uri(parse_uri("sips:pbx.example.com")) == Peer("tls", "pbx.example.com", 5061)
    assert peer_for_uri(parse_uri("sip:pbx.example.com;transport=tls")).port == 5061


def test_a_peer_from_a_uri_carries_the_tls_verification_choice() -> None:
    assert peer_for_uri(parse_uri("sips:pbx.example.com")).tls_verify is True
    assert peer_for_uri(parse_uri("sips:pbx.example.com"), tls_verify=False).tls_verify is False


def test_over_tls_our_via_says_tls_and_our_contact_asks_for_tls() -> None:
    here = LocalAddress("tls", "192.0.2.10", 5061)
    assert here.via().startswith("SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK")
    assert here.contact() == "<sip:callbridge@192.0.2.10:5061;transport=tls>"


def test_in_a_sips_dialog_our_contact_is_a_sips_uri() -> None:
    assert (
        LocalAddress("tls", "192.0.2.10", 5061, secure=True).contact() == "<sips:callbridge@192.0.2.10:5061>"
    )
