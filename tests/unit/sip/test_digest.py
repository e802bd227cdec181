"""Digest authentication, client side (RFC 2617 / RFC 7616 vectors, RFC 8760 algorithms, RFC 3261 §22)."""

from __future__ import annotations

import hashlib

import pytest

from app.sip.digest import DigestChallenge, DigestClient, DigestError, authorize, parse_challenge
from app.sip.message import SipRequest, SipResponse, parse_message

RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)
RFC7616_CHALLENGE = (
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
    'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKfirst;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:alice@example.com>;tag=ft1\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: call-1@192.0.2.1\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def params(header: str) -> dict[str, str]:
    """The parameters of a credentials value, unquoted (same grammar as a challenge)."""
    scheme, _, rest = header.partition(" ")
    assert scheme == "Digest"
    return {
        name.strip(): value.strip().strip('"')
        for name, _, value in (item.partition("=") for item in rest.split(", "))
    }


def challenged(request: SipRequest, status: int, *challenges: str) -> SipResponse:
    name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    response = SipResponse(status, "Unauthorized", request.headers.copy())
    response.headers.set("To", "<sip:bob@example.com>;tag=tt1")
    for value in challenges:
        response.headers.add(name, value)
    return response


def invite() -> SipRequest:
    message = parse_message(INVITE)
    assert isinstance(message, SipRequest)
    return message


def client(cnonce: str = "0a4f113b") -> DigestClient:
    return DigestClient("Mufasa", "Circle Of Life", cnonce_factory=lambda: cnonce)


# --- parsing challenges --------------------------------------------------------------------------------


def test_challenge_quoted_and_unquoted_parameters() -> None:
    challenge = parse_challenge(RFC7616_CHALLENGE)
    assert challenge == DigestChallenge(
        realm="http-auth@example.org",
        nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        algorithm="SHA-256",
        qop=["auth", "auth-int"],
        opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
        stale=False,
    )


def test_challenge_names_and_algorithm_are_case_insensitive() -> None:
    challenge = parse_challenge('digest REALM="r", Nonce=abc, ALGORITHM=md5-SESS, Stale=TRUE, QOP=Auth')
    assert (challenge.realm, challenge.nonce, challenge.algorithm) == ("r", "abc", "MD5-sess")
    assert challenge.stale
    assert challenge.qop == ["auth"]


def test_challenge_algorithm_defaults_to_md5() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n"')
    assert (challenge.algorithm, challenge.qop, challenge.opaque, challenge.stale) == ("MD5", [], None, False)


def test_challenge_quoted_values_may_hold_commas_and_escapes() -> None:
    challenge = parse_challenge(r'Digest realm="a, \"b\"", nonce="n,1"')
    assert (challenge.realm, challenge.nonce) == ('a, "b"', "n,1")


@pytest.mark.parametrize(
    "value",
    ['Basic realm="r"', 'Digest realm="r"', 'Digest nonce="n"', 'Digest realm="r", nonce="unterminated'],
)
def test_unusable_challenges_are_refused(value: str) -> None:
    with pytest.raises(DigestError):
        parse_challenge(value)


@pytest.mark.parametrize(
    ("algorithm", "supported"),
    [
        ("MD5", True),
        ("MD5-sess", True),
        ("SHA-256", True),
        ("SHA-256-sess", True),
        ("SHA-512-256", True),
        ("AKAv1-MD5", False),
    ],
)
def test_supported_algorithms(algorithm: str, supported: bool) -> None:
    assert parse_challenge(f'Digest realm="r", nonce="n", algorithm={algorithm}').supported is supported


# --- responses -----------------------------------------------------------------------------------------


def test_rfc2617_example_response() -> None:
    header = client().authorization(parse_challenge(RFC2617_CHALLENGE), "GET", "/dir/index.html")
    fields = params(header)
    assert fields["response"] == "6629fae49393a05397450978507c4ef1"
    assert (fields["qop"], fields["nc"], fields["cnonce"]) == ("auth", "00000001", "0a4f113b")
    assert fields["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41"
    assert (fields["username"], fields["realm"], fields["uri"]) == (
        "Mufasa",
        "testrealm@host.com",
        "/dir/index.html",
    )
    assert fields["algorithm"] == "MD5"


def test_rfc7616_sha256_example_response() -> None:
    # RFC 7616 §3.9.1 uses "Circle of Life" (lower-case "of", erratum 4495).
    digest = DigestClient("Mufasa", "Circle of Life", cnonce_factory=lambda: RFC7616_CNONCE)
    header = digest.authorization(parse_challenge(RFC7616_CHALLENGE), "GET", "/dir/index.html")
    assert params(header)["response"] == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    assert params(header)["algorithm"] == "SHA-256"


def test_rfc7616_md5_example_response() -> None:
    digest = DigestClient("Mufasa", "Circle of Life", cnonce_factory=lambda: RFC7616_CNONCE)
    md5 = parse_challenge(RFC7616_CHALLENGE.replace("algorithm=SHA-256", "algorithm=MD5"))
    assert (
        params(digest.authorization(md5, "GET", "/dir/index.html"))["response"]
        == "8ca523f5e9506fed4657c9700eebdbec"
    )


def test_header_quotes_strings_but_not_tokens() -> None:
    header = client().authorization(parse_challenge(RFC2617_CHALLENGE), "GET", "/dir/index.html")
    assert 'username="Mufasa"' in header
    assert 'cnonce="0a4f113b"' in header
    assert ", qop=auth" in header
    assert ", nc=00000001" in header
    assert ", algorithm=MD5" in header


def test_nonce_count_increases_per_nonce() -> None:
    digest = client()
    first = parse_challenge(RFC2617_CHALLENGE)
    other = parse_challenge(RFC2617_CHALLENGE.replace("dcd98b71", "00000000"))
    counts = [params(digest.authorization(c, "GET", "/"))["nc"] for c in (first, first, other, first)]
    assert counts == ["00000001", "00000002", "00000001", "00000003"]


def test_cnonce_is_random_by_default() -> None:
    digest = DigestClient("u", "p")
    challenge = parse_challenge(RFC2617_CHALLENGE)
    assert (
        params(digest.authorization(challenge, "GET", "/"))["cnonce"]
        != params(digest.authorization(challenge, "GET", "/"))["cnonce"]
    )


def test_md5_sess_hashes_nonce_and_cnonce_into_ha1() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", algorithm=MD5-sess, qop="auth"')
    fields = params(
        DigestClient("u", "p", cnonce_factory=lambda: "c").authorization(challenge, "REGISTER", "sip:r")
    )

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"{md5('u:r:p')}:n:c")
    assert fields["response"] == md5(f"{ha1}:n:00000001:c:auth:{md5('REGISTER:sip:r')}")
    assert fields["algorithm"] == "MD5-sess"


def test_sha256_sess_uses_sha256_throughout() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", algorithm=SHA-256-sess, qop="auth"')
    fields = params(
        DigestClient("u", "p", cnonce_factory=lambda: "c").authorization(challenge, "INVITE", "sip:b")
    )

    def sha(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    ha1 = sha(f"{sha('u:r:p')}:n:c")
    assert fields["response"] == sha(f"{ha1}:n:00000001:c:auth:{sha('INVITE:sip:b')}")


def test_auth_int_only_when_it_is_the_sole_option_and_hashes_the_body() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth-int"')
    fields = params(
        DigestClient("u", "p", cnonce_factory=lambda: "c").authorization(
            challenge, "INVITE", "sip:b", b"v=0\n"
        )
    )

    def md5(data: bytes) -> str:
        return hashlib.md5(data).hexdigest()

    ha2 = md5(b"INVITE:sip:b:" + md5(b"v=0\n").encode())
    assert fields["qop"] == "auth-int"
    assert fields["response"] == md5(f"{md5(b'u:r:p')}:n:00000001:c:auth-int:{ha2}".encode())


def test_without_qop_the_rfc2069_response_has_no_nc_or_cnonce() -> None:
    header = DigestClient("Mufasa", "CircleOfLife").authorization(
        parse_challenge('Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093"'),
        "GET",
        "/dir/index.html",
    )
    fields = params(header)
    assert fields["response"] == "1949323746fe6a43ef61f9606e7febea"
    assert "nc" not in fields
    assert "cnonce" not in fields


def test_unsupported_algorithm_is_refused() -> None:
    with pytest.raises(DigestError):
        client().authorization(
            parse_challenge('Digest realm="r", nonce="n", algorithm=AKAv1-MD5'), "GET", "/"
        )


# --- authorize: the retried request --------------------------------------------------------------------


def test_401_is_answered_with_authorization() -> None:
    request = invite()
    retry = authorize(
        request, challenged(request, 401, 'Digest realm="example.com", nonce="abc", qop="auth"'), client()
    )
    assert retry is not None
    fields = params(retry.headers.get("Authorization") or "")
    assert (fields["realm"], fields["nonce"], fields["uri"]) == ("example.com", "abc", "sip:bob@example.com")
    assert "Proxy-Authorization" not in retry.headers


def test_407_is_answered_with_proxy_authorization() -> None:
    request = invite()
    retry = authorize(request, challenged(request, 407, 'Digest realm="proxy", nonce="abc"'), client())
    assert retry is not None
    assert params(retry.headers.get("Proxy-Authorization") or "")["realm"] == "proxy"
    assert "Authorization" not in retry.headers


def test_retry_is_a_new_transaction_in_the_same_call() -> None:
    request = invite()
    retry = authorize(request, challenged(request, 401, 'Digest realm="r", nonce="abc"'), client())
    assert retry is not None
    assert retry.cseq == (8, "INVITE")
    assert retry.top_via.branch not in (None, "z9hG4bKfirst")
    assert retry.top_via.branch.startswith("z9hG4bK")
    assert "rport" in retry.top_via.params
    assert (retry.call_id, retry.from_.tag) == (request.call_id, "ft1")
    assert retry.body == request.body
    assert (request.cseq, request.top_via.branch) == (
        (7, "INVITE"),
        "z9hG4bKfirst",
    )  # the original is untouched


def test_same_nonce_rejected_twice_gives_up() -> None:
    request = invite()
    digest = client()
    challenge = 'Digest realm="r", nonce="abc", qop="auth"'
    retry = authorize(request, challenged(request, 401, challenge), digest)
    assert retry is not None
    assert authorize(retry, challenged(retry, 401, challenge), digest) is None


def test_stale_nonce_is_answered_again() -> None:
    request = invite()
    digest = client()
    retry = authorize(request, challenged(request, 401, 'Digest realm="r", nonce="old", qop="auth"'), digest)
    assert retry is not None
    again = authorize(
        retry, challenged(retry, 401, 'Digest realm="r", nonce="new", qop="auth", stale=true'), digest
    )
    assert again is not None
    assert params(again.headers.get("Authorization") or "")["nonce"] == "new"
    assert len(again.headers.get_all("Authorization")) == 1
    assert again.cseq == (9, "INVITE")


def test_fresh_nonce_without_stale_after_our_credentials_gives_up() -> None:
    request = invite()
    digest = client()
    retry = authorize(request, challenged(request, 401, 'Digest realm="r", nonce="one"'), digest)
    assert retry is not None
    assert authorize(retry, challenged(retry, 401, 'Digest realm="r", nonce="two"'), digest) is None


def test_unsupported_algorithm_only_gives_up() -> None:
    request = invite()
    response = challenged(request, 401, 'Digest realm="r", nonce="n", algorithm=AKAv1-MD5')
    assert authorize(request, response, client()) is None


def test_topmost_supported_challenge_is_answered() -> None:
    request = invite()
    response = challenged(
        request,
        401,
        'Digest realm="r", nonce="n1", algorithm=AKAv1-MD5',
        'Digest realm="r", nonce="n2", algorithm=SHA-256, qop="auth"',
        'Digest realm="r", nonce="n3", algorithm=MD5, qop="auth"',
    )
    retry = authorize(request, response, client())
    assert retry is not None
    [value] = retry.headers.get_all("Authorization")
    assert (params(value)["nonce"], params(value)["algorithm"]) == ("n2", "SHA-256")


def test_proxy_credentials_are_kept_when_the_server_challenges_next() -> None:
    request = invite()
    digest = client()
    through_proxy = authorize(request, challenged(request, 407, 'Digest realm="proxy", nonce="p"'), digest)
    assert through_proxy is not None
    retry = authorize(
        through_proxy, challenged(through_proxy, 401, 'Digest realm="server", nonce="s"'), digest
    )
    assert retry is not None
    assert params(retry.headers.get("Proxy-Authorization") or "")["realm"] == "proxy"
    assert params(retry.headers.get("Authorization") or "")["realm"] == "server"


def test_other_statuses_are_not_answered() -> None:
    request = invite()
    response = challenged(request, 401, 'Digest realm="r", nonce="n"')
    response.status = 403
    assert authorize(request, response, client()) is None


def test_401_without_a_challenge_is_not_answered() -> None:
    request = invite()
    assert authorize(request, challenged(request, 401), client()) is None
