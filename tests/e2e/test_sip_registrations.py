"""SIP registrations end to end: a real `callbridge serve` registering to Kamailio (registrar and
record-routing proxy, reference/sip.md §3.4), and calls from baresip/SIPp routed through Kamailio to the
registered user, with no CIDR range allowed."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningServer, ended, wait_for
from tests.e2e.test_sip_calls import (
    SIP_PEER_TOOLS,
    SipServer,
    assert_ok,
    heard_at_least,
    only_call_of,
    patch_sip_policy,
    refusal,
    running_sip_server,
    server_supports_sip,
)
from tests.sip_peers.baresip import BaresipOptions, baresip
from tests.sip_peers.ctrl_tcp import CALL_CLOSED, CALL_ESTABLISHED
from tests.sip_peers.kamailio import USERS, Kamailio, kamailio
from tests.sip_peers.sipp import SippOptions, run_sipp

pytestmark = pytest.mark.e2e

#: How long a registration may take to get its first answer (Kamailio answers at once).
OUTCOME_WITHIN_S = 15.0


def require_peers() -> None:
    """Skip (fail under CALLBRIDGE_REQUIRE_SIP_PEERS) unless SIPp, baresip, sox and Kamailio are installed."""
    missing = [tool for tool in (*SIP_PEER_TOOLS, "kamailio") if shutil.which(tool) is None]
    if not missing:
        return
    problem = f"the SIP peers are not installed ({', '.join(missing)} missing): apt-get install kamailio"
    if os.environ.get("CALLBRIDGE_REQUIRE_SIP_PEERS"):
        pytest.fail(problem)
    pytest.skip(problem)


@pytest.fixture(scope="module")
def sip_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SipServer]:
    """This module's own SIP server (UDP and TCP on one free port); no CIDR range allowed."""
    if not server_supports_sip():
        pytest.skip("SIP server side not landed")
    require_peers()
    with running_sip_server(tmp_path_factory.mktemp("sip-registrations"), "udp,tcp") as running:
        yield running


@pytest.fixture(scope="module")
async def registrar(
    tmp_path_factory: pytest.TempPathFactory, sip_server: SipServer
) -> AsyncIterator[Kamailio]:
    async with kamailio(tmp_path_factory.mktemp("kamailio")) as running:
        yield running


@pytest.fixture
async def registrations(sip_server: SipServer) -> AsyncIterator[list[str]]:
    """Ids of the registrations a test creates (`register`); each is deleted after the test."""
    created: list[str] = []
    yield created
    async with sip_server.server.api() as api:
        for registration_id in created:
            await api.delete(f"/api/sip/registrations/{registration_id}")


async def register(server: RunningServer, created: list[str], **body: Any) -> dict[str, Any]:
    """POST a registration; its first outcome once the registrar has answered."""
    async with server.api() as api:
        response = await api.post("/api/sip/registrations", json=body)
    assert response.status_code == 201, response.text
    registration_id = response.json()["registrationId"]
    created.append(registration_id)
    return await outcome(server, registration_id)


async def outcome(server: RunningServer, registration_id: str) -> dict[str, Any]:
    async def answered() -> dict[str, Any] | None:
        async with server.api() as api:
            shown = (await api.get(f"/api/sip/registrations/{registration_id}")).json()
        return shown if shown["successful"] is not None else None

    return await wait_for(answered, within=OUTCOME_WITHIN_S)


def as_bot(registrar: Kamailio, **extra: str) -> dict[str, str]:
    return {"username": "bot", "password": USERS["bot"], "proxy": registrar.address, **extra}


async def routed_to_new_agent(server: RunningServer, pattern: str) -> str:
    """A new (echo) agent that INVITEs for users matching `pattern` reach; no CIDR range allowed."""
    async with server.api() as api:
        response = await api.post("/api/agents", json={"name": "registered", "callTemplate": {}})
        assert response.status_code == 201, response.text
    agent_id = response.json()["agentId"]
    policy = {"allowedCidrRanges": [], "allowedAgents": [{"agentId": agent_id, "toUserPattern": pattern}]}
    await patch_sip_policy(server, policy)
    return agent_id


async def test_the_right_password_registers_with_an_expiry(
    sip_server: SipServer, registrar: Kamailio, registrations: list[str]
) -> None:
    shown = await register(sip_server.server, registrations, **as_bot(registrar))
    assert shown["successful"] is True, shown
    assert shown["expiresAt"] is not None and shown["lastError"] is None


async def test_a_registration_over_tcp_succeeds_too(
    sip_server: SipServer, registrar: Kamailio, registrations: list[str]
) -> None:
    body = as_bot(registrar, proxy=f"{registrar.address};transport=tcp")
    shown = await register(sip_server.server, registrations, **body)
    assert shown["successful"] is True, shown


async def test_a_wrong_password_leaves_it_unsuccessful_with_the_reason(
    sip_server: SipServer, registrar: Kamailio, registrations: list[str]
) -> None:
    body = {"username": "alice", "password": "not-the-password", "proxy": registrar.address}
    shown = await register(sip_server.server, registrations, **body)
    assert shown["successful"] is False
    assert shown["lastError"].startswith("401") and "wrong password" in shown["lastError"], shown


async def test_a_call_through_kamailio_to_the_registered_user_reaches_the_agent(
    sip_server: SipServer, registrar: Kamailio, registrations: list[str], tmp_path: Path
) -> None:
    server = sip_server.server
    agent_id = await routed_to_new_agent(server, "^bot$")
    assert (await register(server, registrations, **as_bot(registrar)))["successful"] is True
    caller = BaresipOptions(user="caller", codec="PCMU", answermode="manual")
    async with baresip(caller, tmp_path / "baresip") as phone:
        await phone.ctrl.dial(f"sip:bot@{registrar.address}")
        await phone.ctrl.wait_event(CALL_ESTABLISHED, within=15)
        await wait_for(lambda: heard_at_least(phone, 2.0), within=20)
        await phone.ctrl.hangup()
        await phone.ctrl.wait_event(CALL_CLOSED, within=10)
    call = await ended(server, (await only_call_of(server, agent_id))["callId"])
    assert call["joined"] is not None and call["endReason"] == "hangup", call


async def test_deleting_a_registration_removes_its_binding_from_kamailio(
    sip_server: SipServer, registrar: Kamailio, registrations: list[str], tmp_path: Path
) -> None:
    server = sip_server.server
    await routed_to_new_agent(server, "^bot$")
    assert (await register(server, registrations, **as_bot(registrar)))["successful"] is True
    async with server.api() as api:
        assert (await api.delete(f"/api/sip/registrations/{registrations.pop()}")).status_code == 204
    options = SippOptions(
        "uac_expect.xml", remote=registrar.address, service="bot", keys=refusal(404), timeout=20
    )
    assert_ok(await run_sipp(options, tmp_path))


async def test_a_patched_password_registers_again_at_once(
    sip_server: SipServer, registrar: Kamailio, registrations: list[str]
) -> None:
    server = sip_server.server
    wrong = await register(server, registrations, **as_bot(registrar, password="wrong"))
    assert wrong["successful"] is False
    async with server.api() as api:
        path = f"/api/sip/registrations/{wrong['registrationId']}"
        assert (await api.patch(path, json={"password": USERS["bot"]})).status_code == 200
    assert (await outcome(server, wrong["registrationId"]))["successful"] is True


async def test_a_server_shutting_down_removes_its_binding_from_kamailio(
    registrar: Kamailio, tmp_path: Path
) -> None:
    (tmp_path / "server").mkdir()
    with running_sip_server(tmp_path / "server", rtp_ports=20) as running:
        server = running.server
        assert (await register(server, [], **as_bot(registrar)))["successful"] is True
    options = SippOptions(
        "uac_expect.xml", remote=registrar.address, service="bot", keys=refusal(404), timeout=20
    )
    assert_ok(await run_sipp(options, tmp_path / "sipp"))
