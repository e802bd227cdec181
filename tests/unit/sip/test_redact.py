"""Credentials taken out of stored SIP messages (app.sip.redact)."""

from __future__ import annotations

from app.sip.redact import redact_credentials


def message(*headers: str, body: str = "") -> str:
    return "\r\n".join(["INVITE sip:bob@pbx SIP/2.0", *headers, "", body])


def test_a_digest_response_is_redacted_and_the_rest_kept() -> None:
    header = (
        'Authorization: Digest username="alice", realm="pbx", nonce="n1", uri="sip:bob@pbx", response="9f3a"'
    )
    redacted = redact_credentials(message(header))
    assert 'response="[redacted]"' in redacted and "9f3a" not in redacted
    assert 'username="alice", realm="pbx", nonce="n1", uri="sip:bob@pbx"' in redacted


def test_a_proxy_authorization_response_is_redacted_whatever_its_case() -> None:
    redacted = redact_credentials(
        message("proxy-authorization: Digest username=bob, RESPONSE=abcdef, qop=auth")
    )
    assert "abcdef" not in redacted and 'RESPONSE="[redacted]", qop=auth' in redacted


def test_credentials_of_another_scheme_are_redacted_whole() -> None:
    redacted = redact_credentials(message("Authorization: Bearer eyJhbGciOi.secret.token"))
    assert redacted.splitlines()[1] == "Authorization: Bearer [redacted]"


def test_an_authentication_info_rspauth_is_redacted() -> None:
    redacted = redact_credentials(message('Authentication-Info: rspauth="77aa", cnonce="c1", nc=00000001'))
    assert "77aa" not in redacted and 'cnonce="c1"' in redacted


def test_a_challenge_and_the_body_are_kept() -> None:
    challenge = 'WWW-Authenticate: Digest realm="pbx", nonce="n1"'
    text = message(challenge, "Content-Type: text/plain", body="response=not-a-header")
    assert redact_credentials(text) == text
