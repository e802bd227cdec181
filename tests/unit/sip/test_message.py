"""app.sip.message: URIs, header values, whole messages, responses and stream framing."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.sip.message import (
    MAX_HEADER_BYTES,
    MAX_HEADER_COUNT,
    MAX_MESSAGE_BYTES,
    Headers,
    NameAddr,
    SipParseError,
    SipRequest,
    SipResponse,
    StreamFramer,
    UnsupportedUriScheme,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
    response_to,
    serialize,
    split_header_list,
)


def sip(*lines: str, body: str = "") -> bytes:
    """A message from its header lines, CRLF-terminated, with an optional body."""
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


INVITE = sip(
    "INVITE sip:agent_42@callbridge.example.com SIP/2.0",
    "Via: SIP/2.0/UDP pbx.example.net:5060;branch=z9hG4bK776asdhds;rport",
    "Via: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds8;received=192.0.2.99",
    "Max-Forwards: 70",
    'From: "Alice Smith" <sip:alice@example.net>;tag=1928301774',
    "To: <sip:agent_42@callbridge.example.com>",
    "Call-ID: a84b4c76e66710@pc33.example.net",
    "CSeq: 314159 INVITE",
    "Contact: <sip:alice@192.0.2.4:5060;transport=udp>",
    "Content-Type: application/sdp",
    "Content-Length: 4",
    body="v=0\n",
)


# --- URIs ---------------------------------------------------------------------------------------------


def test_uri_parts_are_parsed() -> None:
    uri = parse_uri("sip:alice:secret@Example.COM:5070;transport=TCP;lr?Subject=hi")
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sip",
        "alice",
        "secret",
        "example.com",
        5070,
    )
    assert uri.params == {"transport": "TCP", "lr": None}
    assert uri.headers == {"Subject": "hi"}


def test_uri_user_part_is_percent_decoded() -> None:
    assert parse_uri("sip:agent%5F42@example.com").user == "agent_42"


def test_uri_user_phone_stays_a_parameter() -> None:
    uri = parse_uri("sip:+15551234567@gw.example.com;user=phone")
    assert uri.user == "+15551234567"
    assert uri.params == {"user": "phone"}


def test_uri_user_reencodes_characters_that_need_escaping() -> None:
    assert str(parse_uri("sip:I%20have%20spaces@example.net")) == "sip:I%20have%20spaces@example.net"


def test_uri_round_trips() -> None:
    text = "sips:bob@[2001:db8::10]:5061;transport=tls;maddr=192.0.2.1?Route=%3Csip:p.example.com%3E"
    assert str(parse_uri(text)) == text


def test_uri_escaped_params_are_decoded_and_reencoded() -> None:
    uri = parse_uri("sip:a@example.com;%6C%72;n%61me=v%61lue%25%34%31")
    assert uri.params == {"lr": None, "name": "value%41"}
    assert parse_uri(str(uri)).params == uri.params


def test_uri_ipv6_host_keeps_brackets() -> None:
    uri = parse_uri("sip:[2001:DB8::1]:5060")
    assert (uri.host, uri.port) == ("[2001:db8::1]", 5060)


def test_uri_transport_is_tls_for_sips() -> None:
    assert parse_uri("sips:bob@example.com").transport == "tls"


def test_uri_transport_defaults_to_udp() -> None:
    assert parse_uri("sip:bob@example.com").transport == "udp"


def test_uri_transport_param_is_lower_cased() -> None:
    assert parse_uri("sip:bob@example.com;transport=TCP").transport == "tcp"


def test_tel_uri_number_is_the_user() -> None:
    uri = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert (uri.scheme, uri.user, uri.host) == ("tel", "+1-201-555-0123", "")
    assert str(uri) == "tel:+1-201-555-0123;phone-context=example.com"


@pytest.mark.parametrize(
    "text",
    [
        "http://example.com/",
        "sip:",
        "sip:user@",
        "sip:user@example.com:99999",
        "sip:user@example.com; lr",
        "sip:user@exa mple.com",
        "sip:us<er@example.com",
        "sip:user@example.com;;lr",
    ],
)
def test_malformed_uri_raises(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


# --- name-addr ----------------------------------------------------------------------------------------


def test_name_addr_quoted_display_name_is_unquoted() -> None:
    value = parse_name_addr('"Bell, \\"Alexander\\"" <sip:a.g.bell@example.com>;tag=43')
    assert value.display_name == 'Bell, "Alexander"'
    assert value.tag == "43"


def test_name_addr_token_display_name() -> None:
    value = parse_name_addr("A. Bell <sip:a.g.bell@example.com>")
    assert value.display_name == "A. Bell"


def test_addr_spec_without_brackets_has_header_params() -> None:
    value = parse_name_addr("sip:caller@example.org;tag=33242")
    assert value.uri.params == {}
    assert value.params == {"tag": "33242"}


def test_name_addr_uri_params_stay_inside_brackets() -> None:
    value = parse_name_addr("<sip:alice@example.net;transport=tcp>;expires=60")
    assert value.uri.params == {"transport": "tcp"}
    assert value.params == {"expires": "60"}


def test_name_addr_param_names_are_lower_cased() -> None:
    assert parse_name_addr("<sip:a@b>;TAG=x").tag == "x"


def test_name_addr_quoted_param_value_may_hold_separators() -> None:
    value = parse_name_addr('<sip:a@b>;+sip.instance="<urn:uuid:1;2>";expires=5')
    assert value.params == {"+sip.instance": '"<urn:uuid:1;2>"', "expires": "5"}


def test_name_addr_with_tag_returns_a_tagged_copy() -> None:
    original = parse_name_addr("<sip:bob@example.com>")
    tagged = original.with_tag("abc")
    assert (original.tag, tagged.tag) == (None, "abc")


def test_name_addr_str_always_uses_brackets() -> None:
    value = NameAddr(parse_uri("sip:bob@example.com"), "Bob", {"tag": "1"})
    assert str(value) == '"Bob" <sip:bob@example.com>;tag=1'


def test_name_addr_unterminated_quote_raises() -> None:
    with pytest.raises(SipParseError, match="unterminated"):
        parse_name_addr('"Mr. J. User <sip:j.user@example.com>')


def test_name_addr_unquoted_display_name_with_comma_raises() -> None:
    with pytest.raises(SipParseError):
        parse_name_addr("Bell, Alexander <sip:a.g.bell@example.com>")


def test_name_addr_empty_param_raises() -> None:
    with pytest.raises(SipParseError):
        parse_name_addr('"Joe" <sip:joe@example.org>;;;;')


# --- Via ----------------------------------------------------------------------------------------------


def test_via_parts_are_parsed() -> None:
    via = parse_via("SIP/2.0/udp Pbx.Example.net:5062;branch=z9hG4bKabc;rport;received=192.0.2.1")
    assert (via.transport, via.host, via.port) == ("UDP", "pbx.example.net", 5062)
    assert via.params == {"branch": "z9hG4bKabc", "rport": None, "received": "192.0.2.1"}
    assert via.branch == "z9hG4bKabc"


def test_via_allows_whitespace_around_slashes() -> None:
    via = parse_via("SIP  /   2.0 / UDP   192.0.2.2 ; branch = z9hG4bK1")
    assert (via.transport, via.host, via.branch) == ("UDP", "192.0.2.2", "z9hG4bK1")


def test_via_str() -> None:
    text = "SIP/2.0/TCP [2001:db8::9]:5070;branch=z9hG4bK1;rport"
    assert str(parse_via(text)) == text


@pytest.mark.parametrize(
    "text",
    ["SIP/2.0/UDP", "SIP/7.0/UDP host", "SIP/2.0/UDP host;;", "SIP/2.0/UDP host;branch", "HTTP/2.0/UDP h"],
)
def test_malformed_via_raises(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_via(text)


# --- Headers ------------------------------------------------------------------------------------------


def test_headers_lookup_is_case_insensitive() -> None:
    headers = Headers([("call-id", "x")])
    assert headers.get("CALL-ID") == "x"
    assert "Call-Id" in headers


def test_headers_compact_forms_are_stored_under_full_names() -> None:
    headers = Headers([(short, "v") for short in "ifmtvlcekso"])
    assert [name for name, _ in headers.items()] == [
        "Call-ID",
        "From",
        "Contact",
        "To",
        "Via",
        "Content-Length",
        "Content-Type",
        "Content-Encoding",
        "Supported",
        "Subject",
        "Event",
    ]


@pytest.mark.parametrize(
    ("short", "full"),
    [
        ("u", "Allow-Events"),
        ("r", "Refer-To"),
        ("b", "Referred-By"),
        ("x", "Session-Expires"),
        ("y", "Identity"),
    ],
)
def test_headers_extension_compact_forms(short: str, full: str) -> None:
    assert Headers([(short, "v")]).items() == [(full, "v")]


def test_headers_names_are_canonical() -> None:
    headers = Headers([("cseq", "1 INVITE"), ("www-authenticate", "Digest"), ("CALL-ID", "x")])
    assert [name for name, _ in headers.items()] == ["CSeq", "WWW-Authenticate", "Call-ID"]


def test_headers_x_header_keeps_its_name() -> None:
    assert Headers([("x-Customer-ID", "7")]).items() == [("x-Customer-ID", "7")]


def test_headers_unknown_header_keeps_its_name() -> None:
    assert Headers([("newFangledHeader", "v")]).items() == [("newFangledHeader", "v")]


def test_headers_get_returns_first_list_element() -> None:
    headers = Headers([("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b"), ("Via", "SIP/2.0/UDP c")])
    assert headers.get("via") == "SIP/2.0/UDP a;branch=z9hG4bK1"


def test_headers_get_all_splits_lists_across_lines() -> None:
    headers = Headers([("Allow", "INVITE, ACK"), ("Allow", "BYE")])
    assert headers.get_all("allow") == ["INVITE", "ACK", "BYE"]


def test_headers_get_all_does_not_split_inside_quotes_or_brackets() -> None:
    headers = Headers([("Contact", '"Bell, A." <sip:a@b;x=1,2>, <sip:c@d>')])
    assert headers.get_all("m") == ['"Bell, A." <sip:a@b;x=1,2>', "<sip:c@d>"]


def test_headers_get_all_keeps_authentication_header_whole() -> None:
    value = 'Digest realm="x", nonce="y", qop="auth,auth-int"'
    assert Headers([("WWW-Authenticate", value)]).get_all("www-authenticate") == [value]


def test_headers_get_missing_is_none() -> None:
    assert Headers().get("To") is None


def test_headers_prepend_goes_before_same_name() -> None:
    headers = Headers([("From", "f"), ("Via", "v1"), ("Via", "v2")])
    headers.prepend("Via", "v0")
    assert headers.items() == [("From", "f"), ("Via", "v0"), ("Via", "v1"), ("Via", "v2")]


def test_headers_set_replaces_all_in_place() -> None:
    headers = Headers([("Route", "a"), ("To", "t"), ("Route", "b")])
    headers.set("route", "c")
    assert headers.items() == [("Route", "c"), ("To", "t")]


def test_headers_remove_drops_every_instance() -> None:
    headers = Headers([("Route", "a"), ("To", "t"), ("r", "x"), ("Route", "b")])
    headers.remove("ROUTE")
    assert headers.items() == [("To", "t"), ("Refer-To", "x")]


def test_headers_copy_is_independent() -> None:
    headers = Headers([("To", "t")])
    clone = headers.copy()
    clone.add("From", "f")
    assert headers.items() == [("To", "t")]


def test_split_header_list_drops_empty_elements() -> None:
    assert split_header_list("a, ,b,") == ["a", "b"]


# --- parse_message ------------------------------------------------------------------------------------


def test_request_start_line_is_parsed() -> None:
    message = parse_message(INVITE)
    assert isinstance(message, SipRequest)
    assert message.method == "INVITE"
    assert message.uri.user == "agent_42"


def test_request_fields_are_typed() -> None:
    message = parse_message(INVITE)
    assert message.call_id == "a84b4c76e66710@pc33.example.net"
    assert message.cseq == (314159, "INVITE")
    assert message.from_.display_name == "Alice Smith"
    assert message.from_.tag == "1928301774"
    assert message.to.tag is None
    assert [via.host for via in message.vias] == ["pbx.example.net", "192.0.2.4"]
    assert message.top_via.branch == "z9hG4bK776asdhds"
    assert message.contact is not None and message.contact.uri.port == 5060
    assert message.content_type == "application/sdp"
    assert message.body == b"v=0\n"


def test_response_start_line_is_parsed() -> None:
    message = parse_message(
        sip("SIP/2.0 180 Ringing", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "CSeq: 1 INVITE")
    )
    assert isinstance(message, SipResponse)
    assert (message.status, message.reason) == (180, "Ringing")


def test_response_reason_may_contain_spaces() -> None:
    message = parse_message(sip("SIP/2.0 486 Busy Here Right Now"))
    assert isinstance(message, SipResponse)
    assert message.reason == "Busy Here Right Now"


def test_content_type_drops_parameters_and_case() -> None:
    message = parse_message(INVITE.replace(b"application/sdp", b"Application/SDP ; charset=utf-8"))
    assert message.content_type == "application/sdp"


def test_folded_header_lines_are_joined() -> None:
    message = parse_message(
        INVITE.replace(b"Max-Forwards: 70", b"Subject: I know you're\r\n\tthere,\r\n  pal")
    )
    assert message.headers.get("Subject") == "I know you're there, pal"


def test_compact_headers_in_a_message_are_understood() -> None:
    message = parse_message(
        sip(
            "OPTIONS sip:a@b SIP/2.0",
            "v: SIP/2.0/UDP h;branch=z9hG4bK1",
            "f: <sip:c@d>;tag=1",
            "t: <sip:a@b>",
            "i: cid",
            "CSeq: 1 OPTIONS",
            "l: 0",
        )
    )
    assert (message.call_id, message.from_.tag, message.top_via.host) == ("cid", "1", "h")


def test_bare_lf_line_ends_are_accepted() -> None:
    message = parse_message(INVITE.replace(b"\r\n", b"\n"))
    assert (message.call_id, message.body) == ("a84b4c76e66710@pc33.example.net", b"v=0\n")


def test_body_is_cut_to_content_length() -> None:
    message = parse_message(INVITE + b"trailing junk")
    assert message.body == b"v=0\n"


def test_body_without_content_length_runs_to_the_end() -> None:
    message = parse_message(INVITE.replace(b"Content-Length: 4\r\n", b""))
    assert message.body == b"v=0\n"


def test_content_length_larger_than_body_raises() -> None:
    with pytest.raises(SipParseError, match="Content-Length"):
        parse_message(INVITE.replace(b"Content-Length: 4", b"Content-Length: 9999"))


def test_negative_content_length_raises() -> None:
    with pytest.raises(SipParseError, match="Content-Length"):
        parse_message(INVITE.replace(b"Content-Length: 4", b"Content-Length: -999"))


@pytest.mark.parametrize("name", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_request_without_mandatory_header_raises(name: str) -> None:
    lines = [line for line in INVITE.split(b"\r\n") if not line.startswith(name.encode() + b":")]
    with pytest.raises(SipParseError, match=name):
        parse_message(b"\r\n".join(lines))


def test_request_with_cseq_method_mismatch_raises() -> None:
    with pytest.raises(SipParseError, match="CSeq"):
        parse_message(INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 ACK"))


def test_unknown_sip_version_raises() -> None:
    with pytest.raises(SipParseError, match="version"):
        parse_message(INVITE.replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1))


def test_header_line_without_colon_raises() -> None:
    with pytest.raises(SipParseError, match="colon"):
        parse_message(INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards 70"))


def test_message_without_empty_line_after_headers_raises() -> None:
    with pytest.raises(SipParseError):
        parse_message(b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h")


def test_garbage_raises() -> None:
    with pytest.raises(SipParseError):
        parse_message(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")


def test_too_many_headers_raise() -> None:
    extra = b"".join(b"X-N%d: v\r\n" % i for i in range(MAX_HEADER_COUNT))
    with pytest.raises(SipParseError, match="headers"):
        parse_message(INVITE.replace(b"Max-Forwards: 70\r\n", extra))


def test_header_block_over_cap_raises() -> None:
    with pytest.raises(SipParseError, match="headers larger"):
        parse_message(INVITE.replace(b"Max-Forwards: 70", b"X-Big: " + b"a" * MAX_HEADER_BYTES))


def test_message_over_cap_raises() -> None:
    body = b"a" * MAX_MESSAGE_BYTES
    data = INVITE.replace(b"Content-Length: 4", b"Content-Length: %d" % len(body)).replace(b"v=0\n", body)
    with pytest.raises(SipParseError, match="message larger"):
        parse_message(data)


# --- serialize and response_to ------------------------------------------------------------------------


def test_serialize_round_trips() -> None:
    message = parse_message(INVITE)
    assert serialize(message) == INVITE


def test_serialize_sets_content_length_from_the_body() -> None:
    message = parse_message(INVITE)
    message.body = b"v=0\r\no=-\r\n"
    assert b"\r\nContent-Length: 10\r\n\r\nv=0\r\no=-\r\n" in serialize(message)
    assert serialize(message).count(b"Content-Length") == 1


def test_serialize_never_lets_a_value_end_the_line() -> None:
    message = parse_message(INVITE)
    message.headers.add("X-Note", "a\r\nInjected: yes")
    assert b"\r\nInjected" not in serialize(message)


def test_response_to_copies_vias_in_order() -> None:
    request = parse_message(INVITE)
    assert isinstance(request, SipRequest)
    response = response_to(request, 200)
    assert [via.branch for via in response.vias] == ["z9hG4bK776asdhds", "z9hG4bKnashds8"]


def test_response_to_copies_dialog_headers() -> None:
    request = parse_message(INVITE)
    assert isinstance(request, SipRequest)
    response = response_to(request, 180)
    assert response.call_id == request.call_id
    assert response.cseq == request.cseq
    assert response.from_ == request.from_


def test_response_to_adds_the_to_tag() -> None:
    request = parse_message(INVITE)
    assert isinstance(request, SipRequest)
    assert response_to(request, 200, to_tag="as83kd").to.tag == "as83kd"


def test_response_to_keeps_an_existing_to_tag() -> None:
    request = parse_message(INVITE.replace(b"callbridge.example.com>", b"callbridge.example.com>;tag=old"))
    assert isinstance(request, SipRequest)
    assert response_to(request, 200, to_tag="new").to.tag == "old"


def test_response_to_uses_the_default_reason_phrase() -> None:
    request = parse_message(INVITE)
    assert isinstance(request, SipRequest)
    assert response_to(request, 487).reason == "Request Terminated"


def test_response_to_has_empty_body() -> None:
    request = parse_message(INVITE)
    assert isinstance(request, SipRequest)
    response = response_to(request, 200)
    assert (response.body, response.headers.get("Content-Length")) == (b"", "0")


def test_response_to_does_not_copy_other_headers() -> None:
    request = parse_message(INVITE)
    assert isinstance(request, SipRequest)
    assert "Contact" not in response_to(request, 200).headers


# --- StreamFramer -------------------------------------------------------------------------------------


def test_framer_returns_a_whole_message() -> None:
    assert StreamFramer().feed(INVITE) == [INVITE]


def test_framer_joins_split_chunks() -> None:
    framer = StreamFramer()
    out: list[bytes] = []
    for i in range(len(INVITE)):
        out += framer.feed(INVITE[i : i + 1])
    assert out == [INVITE]


def test_framer_splits_two_messages_in_one_chunk() -> None:
    assert StreamFramer().feed(INVITE + INVITE) == [INVITE, INVITE]


def test_framer_skips_keepalive_crlfs() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == []
    assert framer.feed(b"\r\n" + INVITE + b"\r\n\r\n" + INVITE) == [INVITE, INVITE]


def test_framer_counts_double_crlf_pings() -> None:
    framer = StreamFramer()
    framer.feed(b"\r\n")
    framer.feed(b"\r\n")
    framer.feed(INVITE + b"\r\n\r\n")
    assert framer.pings == 2


def test_framer_holds_an_incomplete_body() -> None:
    framer = StreamFramer()
    assert framer.feed(INVITE[:-2]) == []
    assert framer.feed(INVITE[-2:]) == [INVITE]


def test_framer_requires_content_length() -> None:
    with pytest.raises(SipParseError, match="Content-Length"):
        StreamFramer().feed(INVITE.replace(b"Content-Length: 4\r\n", b""))


def test_framer_accepts_compact_content_length() -> None:
    data = INVITE.replace(b"Content-Length: 4", b"l: 4")
    assert StreamFramer().feed(data) == [data]


def test_framer_rejects_invalid_content_length() -> None:
    with pytest.raises(SipParseError, match="Content-Length"):
        StreamFramer().feed(INVITE.replace(b"Content-Length: 4", b"Content-Length: -4"))


def test_framer_rejects_content_length_over_cap() -> None:
    with pytest.raises(SipParseError, match="larger"):
        StreamFramer().feed(INVITE.replace(b"Content-Length: 4", b"Content-Length: 70000"))


def test_framer_rejects_an_endless_header_block() -> None:
    framer = StreamFramer()
    with pytest.raises(SipParseError, match="headers larger"):
        framer.feed(b"INVITE sip:a@b SIP/2.0\r\n" + b"X: " + b"a" * MAX_HEADER_BYTES)


# --- identifiers --------------------------------------------------------------------------------------


def test_new_branch_has_the_magic_cookie() -> None:
    assert new_branch().startswith("z9hG4bK")


def test_new_branch_is_unique() -> None:
    assert len({new_branch() for _ in range(100)}) == 100


def test_new_tag_is_unique() -> None:
    assert new_tag() != new_tag()


def test_new_call_id_names_the_host() -> None:
    assert new_call_id("192.0.2.1").endswith("@192.0.2.1")


# --- more header-value checks -------------------------------------------------------------------------


def test_from_with_a_tel_uri_is_accepted() -> None:
    message = parse_message(INVITE.replace(b"<sip:alice@example.net>", b"<tel:+15551234567>"))
    assert (message.from_.uri.scheme, message.from_.uri.user) == ("tel", "+15551234567")


def test_cseq_number_of_2_to_the_31_raises() -> None:
    with pytest.raises(SipParseError, match="CSeq"):
        parse_message(INVITE.replace(b"CSeq: 314159", b"CSeq: 2147483648"))


def test_max_forwards_over_255_raises() -> None:
    with pytest.raises(SipParseError, match="Max-Forwards"):
        parse_message(INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 300"))


def test_overlarge_expires_raises() -> None:
    with pytest.raises(SipParseError, match="Expires"):
        parse_message(INVITE.replace(b"Max-Forwards: 70", b"Expires: 10000000000000"))


def test_second_call_id_raises() -> None:
    with pytest.raises(SipParseError, match="Call-ID"):
        parse_message(INVITE.replace(b"Max-Forwards: 70", b"i: another@example.net"))


def test_contact_star_is_no_contact() -> None:
    message = parse_message(
        INVITE.replace(b"Contact: <sip:alice@192.0.2.4:5060;transport=udp>", b"Contact: *")
    )
    assert message.contact is None


def test_request_uri_with_unknown_scheme_raises_unsupported_uri_scheme() -> None:
    with pytest.raises(UnsupportedUriScheme):
        parse_message(INVITE.replace(b"INVITE sip:agent_42@", b"INVITE im:agent_42@", 1))


def test_status_line_without_reason_is_accepted() -> None:
    message = parse_message(sip("SIP/2.0 100"))
    assert isinstance(message, SipResponse)
    assert (message.status, message.reason) == (100, "")


# --- RFC 4475 torture messages ------------------------------------------------------------------------

TORTURE = Path(__file__).parent / "torture"


def torture(name: str) -> bytes:
    return (TORTURE / f"{name}.dat").read_bytes()


def torture_request(name: str) -> SipRequest:
    message = parse_message(torture(name))
    assert isinstance(message, SipRequest)
    return message


VALID = [
    "wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq", "semiuri", "transports",
    "mpart01", "unreason", "noreason", "cparam01", "cparam02", "regescrt", "sdp01", "inv2543", "bext01",
    "bcast", "zeromf",
]  # fmt: skip

INVALID = {
    "badinv01": "parameter name",
    "clerr": "Content-Length 9999 is larger",
    "ncl": "invalid Content-Length",
    "scalar02": "invalid Max-Forwards",
    "scalarlg": "CSeq number",
    "quotbal": "unterminated",
    "ltgtruri": "not a URI",
    "lwsruri": "malformed start line",
    "lwsstart": "malformed start line",
    "trws": "malformed start line",
    "escruri": "Request-URI must not carry headers",
    "regbadct": "enclosed in <>",
    "badaspec": "whitespace inside the URI",
    "baddn": "must be quoted",
    "badvers": "version",
    "mismatch01": "does not match",
    "mismatch02": "does not match",
    "bigcode": "status code",
    "insuf": "missing",
    "multi01": "more than one",
    "mcl01": "conflicting Content-Length",
}


@pytest.mark.parametrize("name", VALID)
def test_torture_valid_message_parses(name: str) -> None:
    parse_message(torture(name))


@pytest.mark.parametrize(("name", "reason"), INVALID.items())
def test_torture_invalid_message_raises_with_reason(name: str, reason: str) -> None:
    with pytest.raises(SipParseError, match=reason):
        parse_message(torture(name))


@pytest.mark.parametrize("name", ["unkscm", "novelsc"])
def test_torture_unknown_request_uri_scheme_raises_unsupported_uri_scheme(name: str) -> None:
    with pytest.raises(UnsupportedUriScheme):
        parse_message(torture(name))


@pytest.mark.parametrize("name", VALID)
def test_torture_valid_message_survives_serialize(name: str) -> None:
    message = parse_message(torture(name))
    again = parse_message(serialize(message))
    without_length = [item for item in message.headers.items() if item[0] != "Content-Length"]
    assert [item for item in again.headers.items() if item[0] != "Content-Length"] == without_length
    assert again.body == message.body


def test_torture_wsinv_folded_vias_are_split_and_parsed() -> None:
    vias = torture_request("wsinv").vias
    assert [(via.transport, via.host, via.branch) for via in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]


def test_torture_wsinv_spaces_around_separators_are_ignored() -> None:
    message = torture_request("wsinv")
    assert message.to.tag == "1918181833n"
    assert message.from_.tag == "98asjd8"
    assert message.cseq == (9, "INVITE")


def test_torture_wsinv_escaped_quotes_in_display_name_are_unescaped() -> None:
    message = torture_request("wsinv")
    assert message.from_.display_name == 'J Rosenberg \\"'
    assert message.contact is not None and message.contact.display_name == 'Quoted string ""'


def test_torture_wsinv_folded_contact_params() -> None:
    contact = torture_request("wsinv").contact
    assert contact is not None
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}


def test_torture_wsinv_folded_unknown_header_is_joined() -> None:
    headers = torture_request("wsinv").headers
    assert headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert headers.get("Subject") == ""


def test_torture_intmeth_unusual_method_and_uri() -> None:
    message = torture_request("intmeth")
    assert message.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert message.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert message.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"


def test_torture_intmeth_quoted_control_characters_in_display_name() -> None:
    assert torture_request("intmeth").to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"


def test_torture_intmeth_utf8_header_values() -> None:
    message = torture_request("intmeth")
    assert (
        message.from_.params["fromparam''~+*_!.-%"]
        == '"\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439"'
    )
    assert message.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff\u5927\u505c\u96fb"


def test_torture_esc01_escaped_user_parts_are_decoded() -> None:
    message = torture_request("esc01")
    assert message.uri.user == "sips:user@example.com"
    assert message.to.uri.user == "user"
    assert message.from_.uri.user == "I have spaces"


def test_torture_esc01_escaped_uri_params_are_decoded() -> None:
    contact = torture_request("esc01").contact
    assert contact is not None
    assert contact.uri.user == "caller"
    assert contact.uri.params == {"lr": None, "name": "value%41"}


def test_torture_esc02_escaped_header_name_is_another_header() -> None:
    headers = torture_request("esc02").headers
    assert len(headers.get_all("Contact")) == 2
    assert headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_torture_escnull_escaped_nulls_are_decoded() -> None:
    message = torture_request("escnull")
    assert message.to.uri.user == "null-\x00-null"
    assert [parse_name_addr(value).uri.user for value in message.headers.get_all("m")] == ["\x00", "\x00\x00"]


def test_torture_lwsdisp_display_name_without_space() -> None:
    assert torture_request("lwsdisp").from_.display_name == "caller"


def test_torture_longreq_many_vias_in_order() -> None:
    vias = torture_request("longreq").vias
    assert len(vias) == 34
    assert [via.host for via in vias[:2]] == ["sip33.example.com", "sip32.example.com"]
    assert vias[-1].params["received"] == "192.0.2.5"


def test_torture_longreq_long_values() -> None:
    message = torture_request("longreq")
    assert message.to.uri.port == 6000
    assert message.from_.tag == "12" + "982" * 50 + "424"


def test_torture_dblreq_only_the_first_message_is_read() -> None:
    message = torture_request("dblreq")
    assert (message.method, message.body) == ("REGISTER", b"")


def test_torture_semiuri_semicolon_belongs_to_the_user() -> None:
    uri = torture_request("semiuri").uri
    assert (uri.user, uri.host, uri.params) == ("user;par=u@example.net", "example.com", {})


def test_torture_semiuri_folded_list_is_split() -> None:
    assert len(torture_request("semiuri").headers.get_all("Accept")) == 6


def test_torture_transports_unknown_transports_are_kept() -> None:
    vias = torture_request("transports").vias
    assert [via.transport for via in vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_torture_mpart01_binary_body_is_kept_exactly() -> None:
    data = torture("mpart01")
    message = parse_message(data)
    assert message.body == data[-553:]
    assert message.content_type == "multipart/mixed"


def test_torture_unreason_utf8_reason_phrase() -> None:
    message = parse_message(torture("unreason"))
    assert isinstance(message, SipResponse)
    assert message.reason.endswith("\u043f\u0440\u043e\u0441\u0442\u043e\u0435")


def test_torture_noreason_empty_reason_phrase() -> None:
    message = parse_message(torture("noreason"))
    assert isinstance(message, SipResponse)
    assert (message.status, message.reason) == (100, "")


def test_torture_cparam01_param_after_addr_spec_is_a_header_param() -> None:
    contact = torture_request("cparam01").contact
    assert contact is not None
    assert (contact.uri.params, contact.params) == ({}, {"unknownparam": None})


def test_torture_cparam02_param_inside_brackets_is_a_uri_param() -> None:
    contact = torture_request("cparam02").contact
    assert contact is not None
    assert (contact.uri.params, contact.params) == ({"unknownparam": None}, {})


def test_torture_regescrt_escaped_uri_header_is_decoded() -> None:
    contact = torture_request("regescrt").contact
    assert contact is not None
    assert contact.uri.headers == {"Route": "<sip:sip.example.com>"}


def test_torture_inv2543_body_without_content_length_runs_to_the_end() -> None:
    message = torture_request("inv2543")
    assert message.body.startswith(b"v=0") and message.body.endswith(b"RTP/AVP 0\r\n")
    assert message.top_via.branch is None


def test_torture_wsinv_frames_in_small_chunks() -> None:
    data = torture("wsinv")
    framer = StreamFramer()
    out: list[bytes] = []
    for i in range(0, len(data), 7):
        out += framer.feed(data[i : i + 7])
    assert out == [data]
