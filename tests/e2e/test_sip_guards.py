"""SIP part 2's fallback handler, per-source rate limits and sip_logs against a real `callbridge serve`,
with SIPp calling it: the handler is a real HTTP server on loopback (tests/webhook_receiver.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.sip.ports import RtpPortRange
from app.sip.rtp_session import RtpSession
from tests.api.sip_phone import SipPhone, sdp_offer
from tests.conftest import RunningServer, ended
from tests.e2e.test_sip_calls import (
    SipServer,
    only_call_of,
    patch_sip_policy,
    pcap_call,
    refusal,
    require_sip_peers,
    running_sip_server,
)
from tests.sip_peers.ports import rtp_port_range
from tests.sip_peers.sipp import SIPP_PCAPS, SippOptions, run_sipp
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

SECRET = "e2e-fallback-handler-secret"
#: SIPp's flood: many more INVITEs, much faster, than the default limit (10/s, bursts of 20) lets in.
FLOOD_CALLS, FLOOD_RATE = 40, 400


@pytest.fixture(scope="module")
def sip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SipServer]:
    require_sip_peers()
    with running_sip_server(tmp_path_factory.mktemp("sip-guards"), rtp_ports=100) as running:
        yield running


async def new_agent(server: RunningServer) -> str:
    async with server.api() as api:
        response = await api.post("/api/agents", json={"name": "guards", "callTemplate": {}})
        assert response.status_code == 201, response.text
        return response.json()["agentId"]


async def use_handler(server: RunningServer, url: str | None) -> None:
    handler = {"url": url, "secrets": [SECRET]} if url else None
    await patch_sip_policy(server, {"allowedCidrRanges": ["127.0.0.1/32"], "fallbackHandler": handler})


async def sip_logs(server: RunningServer, call_id: str) -> list[dict[str, Any]]:
    async with server.api() as api:
        response = await api.get(f"/api/calls/{call_id}/sip_logs", params={"pageSize": 200})
        assert response.status_code == 200, response.text
        return response.json()["results"]


async def test_a_sipp_call_no_route_matches_reaches_the_agent_the_signed_handler_names(
    sip: SipServer, tmp_path: Path
) -> None:
    agent = await new_agent(sip.server)
    answer = {"startAgentCall": {"agentId": agent, "templateContext": {"campaign": "spring"}}}
    async with WebhookReceiver(200, orjson.dumps(answer)) as handler:
        await use_handler(sip.server, handler.url)
        options = pcap_call(sip, agent, SIPP_PCAPS / "g711a.pcap", ("8", "PCMA/8000"))
        result = await run_sipp(dataclasses.replace(options, service="sales"), tmp_path)
        headers, body = handler.received.get_nowait()
    assert result.ok, result.summary()
    timestamp = headers["x-callbridge-webhook-timestamp"]
    expected = hmac.new(SECRET.encode(), body + timestamp.encode(), hashlib.sha256).hexdigest()
    assert headers["x-callbridge-webhook-signature"] == expected
    assert json.loads(json.loads(body)["invite"]["headers"]["X-Customer"]) == {"plan": "pro"}
    call = await ended(sip.server, (await only_call_of(sip.server, agent))["callId"])
    context = call["templateContext"]
    assert context["campaign"] == "spring" and context["customer"] == {"plan": "pro"}
    logs = await sip_logs(sip.server, call["callId"])
    assert logs[0]["direction"] == "in" and logs[0]["message"].startswith("INVITE sip:sales@")
    assert any(entry["message"].startswith("BYE ") for entry in logs)


async def test_a_handlers_reject_reaches_sipp_as_its_status(sip: SipServer, tmp_path: Path) -> None:
    answer = {"reject": {"sipRejectCode": 486}}
    async with WebhookReceiver(200, orjson.dumps(answer)) as handler:
        await use_handler(sip.server, handler.url)
        options = SippOptions("uac_expect.xml", remote=sip.address, service="sales", keys=refusal(486))
        result = await run_sipp(options, tmp_path)
    assert result.ok, result.summary()


async def test_a_sipp_flood_gets_503s_while_another_address_still_calls_in(
    sip: SipServer, tmp_path: Path
) -> None:
    agent = await new_agent(sip.server)
    await use_handler(sip.server, None)
    allowed = {"allowedCidrRanges": ["127.0.0.1/32", "127.0.0.3/32"], "allowAllAgents": True}
    await patch_sip_policy(sip.server, allowed)
    flood = SippOptions(
        "uac_expect.xml",
        remote=sip.address,
        service="nobody",
        keys=refusal(503),
        calls=FLOOD_CALLS,
        rate=FLOOD_RATE,
        timeout=40,
    )
    result = await run_sipp(flood, tmp_path)
    statuses = result.statuses_received()
    assert 503 in statuses and statuses.count(404) < FLOOD_CALLS, result.summary()
    assert "Retry-After: " in result.messages
    other = await SipPhone("127.0.0.3", ("127.0.0.1", sip.sip_port)).open()
    rtp = await RtpSession.open("127.0.0.3", RtpPortRange(*rtp_port_range(4, "127.0.0.3")))
    try:
        dialed = other.invite(f"agent_{agent}", sdp_offer("127.0.0.3", rtp.local_port))
        ok = await other.response()
        assert ok.status == 200, ok.status
        other.ack(dialed, ok.to.tag or "")
        other.bye(dialed)
        assert (await other.response("BYE")).status == 200
    finally:
        rtp.close()
        other.close()
