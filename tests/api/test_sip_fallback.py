"""The SIP fallback handler (ARCHITECTURE §3.1): an INVITE no route matches is POSTed, signed, to the
account's handler, a real HTTP server on loopback here, whose answer decides the call."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from tests.api.sip_phone import SipPhone, sdp_offer
from tests.api.test_sip_calls import new_agent, only_call, server_of, sip_client
from tests.webhook_receiver import WebhookReceiver

SECRETS = ["first-handler-secret", "second-handler-secret"]
#: The handler's time to decide in these tests: short, so the slow handler's 480 comes quickly.
FALLBACK_TIMEOUT_S = 0.5


@pytest.fixture
def client(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    timeout = getattr(request, "param", FALLBACK_TIMEOUT_S)
    yield from sip_client(tmp_path, sip_fallback_timeout=timeout)


@pytest.fixture
async def phone(client: TestClient) -> AsyncIterator[SipPhone]:
    phone = await SipPhone("127.0.0.1", server_of(client)).open()
    yield phone
    phone.close()


def use_handler(client: TestClient, url: str) -> None:
    response = client.patch("/api/sip", json={"fallbackHandler": {"url": url, "secrets": SECRETS}})
    assert response.status_code == 200, response.text


def answering(answer: Any, status: int = 200) -> WebhookReceiver:
    return WebhookReceiver(status, orjson.dumps(answer))


def calls_made(client: TestClient) -> int:
    return client.get("/api/calls").json()["total"]


def call_unmatched(phone: SipPhone, **headers: str) -> None:
    phone.invite("nobody-routes-this", sdp_offer("127.0.0.1", 4000), headers=headers)


# --- what the handler is sent ------------------------------------------------------------------


async def test_the_handler_is_sent_the_invite_signed_with_each_secret(
    client: TestClient, phone: SipPhone
) -> None:
    async with answering({"reject": {}}) as handler:
        use_handler(client, handler.url)
        call_unmatched(phone)
        headers, body = await asyncio.wait_for(handler.received.get(), 10)
    timestamp = headers["x-callbridge-webhook-timestamp"]
    expected = [
        hmac.new(secret.encode(), body + timestamp.encode(), hashlib.sha256).hexdigest() for secret in SECRETS
    ]
    assert headers["x-callbridge-webhook-signature"].split(",") == expected


async def test_the_handler_is_sent_caller_callee_x_headers_and_where_the_invite_came_from(
    client: TestClient, phone: SipPhone
) -> None:
    async with answering({"reject": {}}) as handler:
        use_handler(client, handler.url)
        dialed = phone.invite(
            "sales", sdp_offer("127.0.0.1", 4000), headers={"X-Customer-Id": "42", "Subject": "hi"}
        )
        _, body = await asyncio.wait_for(handler.received.get(), 10)
    invite = json.loads(body)["invite"]
    assert json.loads(body)["event"] == "sip.unmatched_invite"
    assert invite == {
        "sipCallId": dialed.call_id,
        "requestUri": f"sip:sales@{phone.server[0]}:{phone.server[1]}",
        "callee": "sales",
        "caller": "+15550001111",
        "fromUri": "sip:+15550001111@127.0.0.1",
        "fromDisplayName": "Test Phone",
        "toUri": f"sip:sales@{phone.server[0]}",
        "source": {"transport": "udp", "host": "127.0.0.1", "port": phone.port},
        "headers": {"X-Customer-Id": "42"},
    }


async def test_an_invite_a_route_matches_never_reaches_the_handler(
    client: TestClient, phone: SipPhone
) -> None:
    agent = new_agent(client, {})
    async with answering({"reject": {}}) as handler:
        use_handler(client, handler.url)
        phone.invite(f"agent_{agent}", sdp_offer("127.0.0.1", 4000))
        assert (await phone.response()).status == 200
        assert handler.received.empty()


# --- its three answers --------------------------------------------------------------------------


async def test_start_agent_call_answers_with_that_agents_call_and_the_overrides(
    client: TestClient, phone: SipPhone
) -> None:
    agent = new_agent(client, {"systemPrompt": "Hello {{name}}"})
    answer = {
        "startAgentCall": {"agentId": agent, "templateContext": {"name": "Ada"}, "metadata": {"k": "v"}}
    }
    async with answering(answer) as handler:
        use_handler(client, handler.url)
        call_unmatched(phone, **{"X-Customer-Id": "42"})
        assert (await phone.response()).status == 200
    call = only_call(client)
    assert call["agentId"] == agent and call["systemPrompt"] == "Hello Ada"
    assert call["metadata"] == {"k": "v"} and call["templateContext"]["customer_id"] == 42
    assert "incoming" in call["medium"]["sip"]


async def test_start_call_answers_with_a_call_without_an_agent(client: TestClient, phone: SipPhone) -> None:
    async with answering({"startCall": {"systemPrompt": "No agent here", "maxDuration": "60s"}}) as handler:
        use_handler(client, handler.url)
        call_unmatched(phone)
        assert (await phone.response()).status == 200
    call = only_call(client)
    assert call["agentId"] is None and call["systemPrompt"] == "No agent here"
    assert call["maxDuration"] == "60s" and "incoming" in call["medium"]["sip"]


async def test_reject_refuses_the_invite_with_its_code_and_message(
    client: TestClient, phone: SipPhone
) -> None:
    async with answering({"reject": {"sipRejectCode": 486, "message": "Busy Right Now"}}) as handler:
        use_handler(client, handler.url)
        call_unmatched(phone)
        response = await phone.response()
    assert (response.status, response.reason) == (486, "Busy Right Now")
    assert calls_made(client) == 0


async def test_reject_without_a_code_is_603(client: TestClient, phone: SipPhone) -> None:
    async with answering({"reject": {}}) as handler:
        use_handler(client, handler.url)
        call_unmatched(phone)
        assert (await phone.response()).status == 603


# --- a handler that does not decide -------------------------------------------------------------


async def test_a_handler_that_does_not_answer_in_time_gets_the_caller_a_480_after_a_100(
    client: TestClient, phone: SipPhone
) -> None:
    async with WebhookReceiver(hold=True) as handler:
        use_handler(client, handler.url)
        call_unmatched(phone)
        first = await phone.response(final=False)
        final = await phone.response()
    assert first.status == 100
    assert final.status == 480 and "did not answer within 0.5 s" in final.reason
    assert calls_made(client) == 0


@pytest.mark.parametrize("client", [30.0], indirect=True)  # the handler's time cannot run out first
async def test_a_cancel_while_the_handler_decides_ends_the_invite_487(
    client: TestClient, phone: SipPhone
) -> None:
    async with WebhookReceiver(hold=True) as handler:
        use_handler(client, handler.url)
        dialed = phone.invite("nobody-routes-this", sdp_offer("127.0.0.1", 4000), branch="held")
        await asyncio.wait_for(handler.received.get(), 10)
        phone.cancel(dialed, "held")
        final = await phone.response()
    assert final.status == 487
    assert calls_made(client) == 0


async def test_a_handler_answering_an_error_status_gets_480_naming_it(
    client: TestClient, phone: SipPhone
) -> None:
    async with answering({"reject": {}}, status=500) as handler:
        use_handler(client, handler.url)
        call_unmatched(phone)
        response = await phone.response()
    assert response.status == 480 and "HTTP 500" in response.reason


async def test_an_unreachable_handler_gets_480(client: TestClient, phone: SipPhone) -> None:
    async with WebhookReceiver() as closed:
        url = closed.url
    use_handler(client, url)
    call_unmatched(phone)
    response = await phone.response()
    assert response.status == 480 and "could not be reached" in response.reason


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"<html>ok</html>", "not JSON"),
        (b'{"reject": {}, "startCall": {}}', "exactly one of"),
        (b"{}", "exactly one of"),
        (b'{"startAgentCall": {"agentId": "no-such-agent"}}', "unknown agent"),
        (b'{"startCall": {"medium": {"twilio": {}}}}', "medium cannot be set"),
        (b'{"reject": {"sipRejectCode": 302}}', "sipRejectCode"),
        (b'{"hangUp": {}}', "hangUp"),
    ],
    ids=["not-json", "two-answers", "no-answer", "unknown-agent", "a-medium", "not-a-refusal", "unknown-key"],
)
async def test_an_unusable_answer_gets_480_saying_what_is_wrong(
    client: TestClient, phone: SipPhone, answer: bytes, reason: str
) -> None:
    async with WebhookReceiver(200, answer) as handler:
        use_handler(client, handler.url)
        call_unmatched(phone)
        response = await phone.response()
    assert response.status == 480 and reason in response.reason, response.reason
    assert calls_made(client) == 0
