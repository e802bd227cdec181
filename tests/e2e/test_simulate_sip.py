"""`callbridge simulate sip` against a real `callbridge serve --sip`: the simulator phones an echo agent over
SIP/RTP, presses keys, hangs up, and reports the round trip."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import RunningServer, ended, events_of, wait_for
from tests.e2e.test_simulate_command import run_cli
from tests.e2e.test_sip_calls import running_sip_server

pytestmark = pytest.mark.e2e

SIP_POLICY = {"allowedCidrRanges": ["127.0.0.1/32"], "allowAllAgents": True}


@pytest.fixture(scope="module")
def sip_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, int]]:
    """This module's own server listening for SIP on a free UDP port: (server, SIP port)."""
    with running_sip_server(tmp_path_factory.mktemp("simulate-sip")) as running:
        yield running.server, running.sip_port


@pytest.fixture(scope="module")
async def sip(sip_server: tuple[RunningServer, int]) -> tuple[RunningServer, int]:
    """The SIP server with loopback allowed and every agent reachable as agent_<agentId>."""
    server, _ = sip_server
    async with server.api() as api:
        response = await api.patch("/api/sip", json=SIP_POLICY)
        assert response.status_code == 200, response.text
    return sip_server


async def echo_agent(server: RunningServer) -> str:
    async with server.api() as api:
        response = await api.post("/api/agents", json={"name": "simulate-sip", "callTemplate": {}})
        assert response.status_code == 201, response.text
        return str(response.json()["agentId"])


async def only_call_of(server: RunningServer, agent_id: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        async with server.api() as api:
            results = (await api.get("/api/calls", params={"agentId": agent_id})).json()["results"]
        return results[0] if results else None

    return await wait_for(check)


def correlation_in(report: str) -> float:
    found = re.search(r"round trip: lag \d+ ms, correlation (-?[0-9.]+)", report)
    assert found, report
    return float(found.group(1))


@pytest.mark.parametrize("codec", ["PCMU", "G722", pytest.param("opus", marks=pytest.mark.needs_opus)])
async def test_simulate_sip_hears_its_own_audio_back_from_the_echo_agent(
    sip: tuple[RunningServer, int], codec: str
) -> None:
    server, port = sip
    agent = await echo_agent(server)
    code, report, errors = await run_cli(
        "sip", "--agent", agent, "--sip-port", str(port), "--codec", codec, server=server
    )
    assert code == 0, report + errors
    assert f"audio {codec}" in report
    assert correlation_in(report) >= 0.9, report
    call = await ended(server, (await only_call_of(server, agent))["callId"])
    assert "ended" in [event["type"] for event in await events_of(server, call["callId"])]


async def test_simulate_sip_delivers_its_digits_as_dtmf_events(sip: tuple[RunningServer, int]) -> None:
    # The echo's correlation is measured without digits: RFC 4733 pauses the caller's audio, and a
    # handset without a jitter buffer (the simulator's) can come out of a pause a packet late under load.
    server, port = sip
    agent = await echo_agent(server)
    code, report, errors = await run_cli(
        "sip", "--agent", agent, "--sip-port", str(port), "--codec", "PCMU", "--dtmf", "12", server=server
    )
    assert code == 0, report + errors
    assert "DTMF sent: 1 2" in report
    call = await ended(server, (await only_call_of(server, agent))["callId"])
    events = await events_of(server, call["callId"])
    assert [event["extras"]["digit"] for event in events if event["type"] == "dtmf"] == ["1", "2"]


async def test_simulate_sip_says_what_to_allow_when_the_agent_is_not_routed(
    sip: tuple[RunningServer, int],
) -> None:
    server, port = sip
    code, report, _ = await run_cli("sip", "--to-user", "nobody", "--sip-port", str(port), server=server)
    assert code == 1
    assert "refused: 404 Not Found" in report and "allowAllAgents or an allowedAgents pattern" in report
