"""SIP across several instances: deploy/kamailio's dispatcher config, run by a real Kamailio in front of
two real `callbridge serve` instances (one PostgreSQL database, one Redis), takes SIPp's calls: new INVITEs
are spread over both instances, and each call's ACK and BYE follow the Record-Route to the instance that
answered it."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL, RunningServer, ended, require_redis, wait_for
from tests.e2e.test_sip_calls import (
    SIP_POLICY,
    patch_sip_policy,
    require_sip_peers,
    running_sip_server,
)
from tests.sip_peers.kamailio import dispatcher_config, running_kamailio
from tests.sip_peers.ports import HOST, free_sip_port
from tests.sip_peers.sipp import SippOptions, run_sipp

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

CALLS = 4


async def calls_of(server: RunningServer, agent_id: str) -> list[dict]:
    async with server.api() as api:
        return (await api.get("/api/calls", params={"agentId": agent_id})).json()["results"]


async def answering_port(server: RunningServer, call_id: str) -> str:
    """The SIP port in the Contact of the 200 OK that answered the call (the instance that took it)."""
    async with server.api() as api:
        logs = (await api.get(f"/api/calls/{call_id}/sip_logs")).json()["results"]
    answer = next(
        m["message"] for m in logs if m["direction"] == "out" and m["message"].startswith("SIP/2.0 200")
    )
    contact = next(line for line in answer.splitlines() if line.lower().startswith(("contact:", "m:")))
    return contact.split(f"{HOST}:", 1)[1].split(";")[0].split(">")[0]


async def test_calls_through_the_dispatcher_reach_both_instances_and_their_byes_the_one_that_answered(
    tmp_path: Path, fresh_postgres_url: str
) -> None:
    require_sip_peers()
    await require_redis()
    env = {
        "CALLBRIDGE_DATABASE_URL": fresh_postgres_url,
        "CALLBRIDGE_SECRET_KEY": "dispatcher-test-secret-key",
        "CALLBRIDGE_REDIS_URL": REDIS_URL,
        "CALLBRIDGE_REDIS_PREFIX": f"cbtest-{uuid.uuid4().hex[:10]}",
    }
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    with running_sip_server(tmp_path / "a", **env) as a, running_sip_server(tmp_path / "b", **env) as b:
        for instance in (a, b):  # each applies a PATCH at once (another's within POLICY_MAX_AGE_S)
            await patch_sip_policy(instance.server, SIP_POLICY)
        async with a.server.api() as api:
            agent = (await api.post("/api/agents", json={"name": "dispatched", "callTemplate": {}})).json()
        listing = tmp_path / "dispatcher.list"
        listing.write_text(f"1 sip:{a.address} 0 0\n1 sip:{b.address} 0 0\n")
        port = free_sip_port()
        config = dispatcher_config(tmp_path / "kamailio", listing, port=port)
        async with running_kamailio(tmp_path / "kamailio", config, port):
            options = SippOptions(
                "uac_via_proxy.xml",
                remote=f"{HOST}:{port}",
                service=f"agent_{agent['agentId']}",
                calls=CALLS,
                rate=1,
                timeout=40,
            )
            result = await run_sipp(options, tmp_path / "sipp")
        assert result.ok, result.summary()

        async def all_ended() -> list[dict] | None:
            found = await calls_of(b.server, agent["agentId"])
            return found if len(found) == CALLS and all(call["ended"] for call in found) else None

        calls = await wait_for(all_ended, within=20)
        assert {call["endReason"] for call in calls} == {"hangup"}  # each BYE reached its instance
        ports = {await answering_port(b.server, call["callId"]) for call in calls}
        assert ports == {str(a.sip_port), str(b.sip_port)}
        for call in calls:
            assert (await ended(b.server, call["callId"]))["joined"] is not None
