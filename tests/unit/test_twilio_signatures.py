"""X-Twilio-Signature: what the official SDK signs verifies; anything tampered with does not."""

from __future__ import annotations

import hashlib
from urllib.parse import urlencode

import pytest
from starlette.datastructures import FormData
from twilio.request_validator import RequestValidator

from app.providers.base import WebhookRequest
from app.providers.twilio import TwilioProvider
from app.schemas.telephony import TwilioConfig

TOKEN = "12345678901234567890123456789012"
URL = "https://bridge.example.com/api/agents/8d1c/telephony_xml"
PARAMS = {"CallSid": "CA1", "AccountSid": "AC1", "From": "+15550001111", "To": "+15550002222"}
CREDENTIALS = TwilioConfig(accountSid="AC1", authToken=TOKEN)
provider = TwilioProvider()


def form_request(url: str, params: dict[str, str], signature: str | None) -> WebhookRequest:
    headers = {"content-type": "application/x-www-form-urlencoded"}
    if signature is not None:
        headers["x-twilio-signature"] = signature
    return WebhookRequest(url, "POST", headers, urlencode(params).encode(), FormData(list(params.items())))


def sign(url: str, params: dict[str, str], token: str = TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, params)


def test_a_request_signed_by_the_sdk_verifies() -> None:
    assert provider.verify(form_request(URL, PARAMS, sign(URL, PARAMS)), CREDENTIALS)


def test_a_signature_with_an_explicit_default_port_verifies() -> None:
    with_port = URL.replace("example.com", "example.com:443")
    assert provider.verify(form_request(URL, PARAMS, sign(with_port, PARAMS)), CREDENTIALS)


def test_a_tampered_parameter_fails() -> None:
    signature = sign(URL, PARAMS)
    assert not provider.verify(form_request(URL, {**PARAMS, "From": "+15559999999"}, signature), CREDENTIALS)


def test_another_url_fails() -> None:
    signature = sign(URL.replace("8d1c", "other"), PARAMS)
    assert not provider.verify(form_request(URL, PARAMS, signature), CREDENTIALS)


def test_another_accounts_token_fails() -> None:
    assert not provider.verify(form_request(URL, PARAMS, sign(URL, PARAMS, "x" * 32)), CREDENTIALS)


@pytest.mark.parametrize("signature", [None, ""])
def test_a_missing_signature_fails(signature: str | None) -> None:
    assert not provider.verify(form_request(URL, PARAMS, signature), CREDENTIALS)


def test_a_json_body_is_checked_through_body_sha256() -> None:
    body = b'{"CallSid": "CA1"}'
    url = f"{URL}?bodySHA256={hashlib.sha256(body).hexdigest()}"
    signature = sign(url, {})
    headers = {"content-type": "application/json", "x-twilio-signature": signature}
    assert provider.verify(WebhookRequest(url, "POST", headers, body), CREDENTIALS)
    assert not provider.verify(WebhookRequest(url, "POST", headers, body + b" "), CREDENTIALS)


def test_the_stream_handshake_is_verified_over_the_wss_url_with_no_params() -> None:
    url = "wss://bridge.example.com/calls/abc/stream/token"
    assert provider.verify_stream(url, {"x-twilio-signature": sign(url, {})}, CREDENTIALS)
    assert not provider.verify_stream(url, {"x-twilio-signature": sign(url + "x", {})}, CREDENTIALS)
    assert not provider.verify_stream(url, {}, CREDENTIALS)


def test_incoming_fields_are_parsed() -> None:
    incoming = provider.parse_incoming(form_request(URL, PARAMS, None))
    assert (incoming.provider_call_id, incoming.from_number, incoming.to_number) == (
        "CA1",
        "+15550001111",
        "+15550002222",
    )
    assert incoming.fields["AccountSid"] == "AC1"


def test_connect_xml_is_a_bidirectional_stream_on_the_join_url() -> None:
    xml = provider.connect_xml("wss://bridge.example.com/calls/c1/stream/t0k3n", "c1", CREDENTIALS)
    assert xml == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        '<Stream url="wss://bridge.example.com/calls/c1/stream/t0k3n"><Parameter name="callId" value="c1" />'
        "</Stream></Connect></Response>"
    )
