"""SIP calls end to end (ARCHITECTURE §3.1): a real `callbridge serve` listening for SIP on loopback, real
SIP peers (SIPp scenarios from tests/sip_peers/scenarios, headless baresip) calling it and being called."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from app.simulator.audio import measure_round_trip, speech_like
from app.simulator.twilio import CallScript, FakeTwilio
from tests.conftest import (
    TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
    TWILIO_CONFIG,
    RunningServer,
    ended,
    events_of,
    get_call,
    import_config,
    run_server,
    wait_for,
)
from tests.sip_peers.baresip import Baresip, BaresipOptions, baresip
from tests.sip_peers.ctrl_tcp import CALL_CLOSED, CALL_ESTABLISHED
from tests.sip_peers.digest import digest_is_valid, sent_credentials
from tests.sip_peers.pcap import pcmu_pcap
from tests.sip_peers.ports import HOST, free_sip_port, rtp_port_range
from tests.sip_peers.sipp import SIPP_PCAPS, SippOptions, SippResult, run_sipp, sipp

pytestmark = pytest.mark.e2e

#: Incoming calls ring this long before callbridge answers, so a CANCEL after the 180 wins the race.
ANSWER_DELAY_S = 1.0
#: Silence on the wire that ends a call connection_error: short for the killed-peer test, longer than
#: uac_lossy.xml's silent 4 s call.
RTP_TIMEOUT_S = 8.0
#: The real peers these tests run (Debian: sip-tester, baresip-core, sox).
SIP_PEER_TOOLS = ("sipp", "baresip", "sox")
SIP_POLICY = {"allowedCidrRanges": ["127.0.0.1/32"], "allowAllAgents": True}
AUTH_USER, AUTH_PASS = "alice", "secret"


def server_supports_sip() -> bool:
    """Whether this checkout's `callbridge serve` takes --sip (the SIP server side has landed)."""
    help_text = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    return "--sip" in help_text


def require_sip_peers() -> None:
    """Skip (fail with CALLBRIDGE_REQUIRE_SIP_PEERS) unless `serve --sip` exists and the peers are here."""
    if not server_supports_sip():
        pytest.skip("SIP server side not landed")
    missing = [tool for tool in SIP_PEER_TOOLS if shutil.which(tool) is None]
    if missing:
        problem = (
            f"the SIP peers are not installed ({', '.join(missing)} missing): "
            "apt-get install sip-tester baresip-core sox"
        )
        if os.environ.get("CALLBRIDGE_REQUIRE_SIP_PEERS"):
            pytest.fail(problem)
        pytest.skip(problem)


@dataclass(frozen=True)
class SipServer:
    """The module's server and where it listens for SIP."""

    server: RunningServer
    sip_port: int

    @property
    def address(self) -> str:
        return f"{HOST}:{self.sip_port}"


@contextmanager
def running_sip_server(
    directory: Path, transports: str = "udp", rtp_ports: int = 200, **env: str
) -> Iterator[SipServer]:
    """A real server in `directory` listening for SIP on one free port (`transports`: "udp" or "udp,tcp"),
    with an RTP range of its own and the settings in `env`."""
    port = free_sip_port()
    first, last = rtp_port_range(rtp_ports)
    listen = ",".join(f"{transport}:{HOST}:{port}" for transport in transports.split(","))
    settings = {"CALLBRIDGE_SIP_LISTEN": listen, "CALLBRIDGE_RTP_PORTS": f"{first}-{last}", **env}
    with run_server(directory, **settings) as running:
        yield SipServer(running, port)


@pytest.fixture(scope="module")
def sip_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SipServer]:
    """This module's own server, listening for SIP on UDP and TCP (one free port), with its own RTP range."""
    require_sip_peers()
    with running_sip_server(
        tmp_path_factory.mktemp("sip-server"),
        "udp,tcp",
        400,
        CALLBRIDGE_SIP_ANSWER_DELAY=str(ANSWER_DELAY_S),
        CALLBRIDGE_RTP_TIMEOUT=str(RTP_TIMEOUT_S),
    ) as running:
        yield running


@pytest.fixture(scope="module")
async def sip(sip_server: SipServer) -> SipServer:
    """The SIP server with loopback allowed and every agent reachable as agent_<agentId>."""
    await patch_sip_policy(sip_server.server, SIP_POLICY)
    return sip_server


@pytest.fixture
async def make_sip_agent(sip: SipServer):  # type: ignore[no-untyped-def]
    """`await make_sip_agent(**callTemplate)`: a new agent (echo pipeline by default) on the SIP server."""

    async def create(**template: Any) -> str:
        async with sip.server.api() as api:
            response = await api.post("/api/agents", json={"name": "sip-e2e", "callTemplate": template})
            assert response.status_code == 201, response.text
            return response.json()["agentId"]

    return create


@pytest.fixture
async def no_source_allowed(sip: SipServer) -> AsyncIterator[None]:
    """The SIP policy with no CIDR allowed, for one test (restored after it)."""
    await patch_sip_policy(sip.server, {"allowedCidrRanges": []})
    yield
    await patch_sip_policy(sip.server, SIP_POLICY)


@pytest.fixture(scope="module")
async def twilio(sip: SipServer) -> FakeTwilio:
    """A fake Twilio calling the SIP server (its credentials imported there)."""
    await import_config(sip.server, "twilio", TWILIO_CONFIG)
    return FakeTwilio(sip.server.base_url, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)


async def patch_sip_policy(server: RunningServer, body: dict[str, Any]) -> None:
    async with server.api() as api:
        response = await api.patch("/api/sip", json=body)
        assert response.status_code == 200, response.text


# --- reading calls back ------------------------------------------------------------------------------


async def only_call_of(server: RunningServer, agent_id: str, within: float = 10) -> dict[str, Any]:
    """The one call the agent has (waiting for it to be created)."""

    async def check() -> dict[str, Any] | None:
        async with server.api() as api:
            results = (await api.get("/api/calls", params={"agentId": agent_id})).json()["results"]
        assert len(results) <= 1, results
        return results[0] if results else None

    return await wait_for(check, within)


async def joined(server: RunningServer, call_id: str, within: float = 10) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        call = await get_call(server, call_id)
        return call if call["joined"] else None

    return await wait_for(check, within)


async def events_of_type(server: RunningServer, call_id: str, event_type: str) -> list[dict[str, Any]]:
    return [event for event in await events_of(server, call_id) if event["type"] == event_type]


async def hang_up(server: RunningServer, call_id: str) -> None:
    async with server.api() as api:
        response = await api.post(f"/api/calls/{call_id}/send_data_message", json={"type": "hang_up"})
        assert response.status_code == 204, response.text


async def dial_out(
    server: RunningServer, to: str, *, call: dict[str, Any] | None = None, **extra: object
) -> dict[str, Any]:
    """`POST /api/calls` with a SIP outgoing medium (echo pipeline; `extra` outgoing fields, `call` other
    fields of the request); the created call."""
    outgoing = {"to": to, "from": f"sip:agent@{HOST}", **extra}
    async with server.api() as api:
        response = await api.post(
            "/api/calls", json={"medium": {"sip": {"outgoing": outgoing}}, **(call or {})}
        )
    assert response.status_code == 201, response.text
    return response.json()


def to_agent(sip: SipServer, agent_id: str) -> dict[str, str]:
    """SippOptions fields calling `agent_<agentId>` on the server."""
    return {"remote": sip.address, "service": f"agent_{agent_id}"}


def refusal(expected_status: int, codec: tuple[str, str] = ("0", "PCMU/8000")) -> dict[str, str]:
    """uac_expect.xml's keys: the status it must get, and the one codec it offers (payload type, rtpmap)."""
    return {"expected_status": str(expected_status), "offer_pt": codec[0], "offer_codec": codec[1]}


def pcap_call(sip: SipServer, agent_id: str, audio: Path, offer: tuple[str, str]) -> SippOptions:
    """uac_pcap_xheader.xml: X-Customer and X-Order-Id, ~7 s of `audio`, digits 1 2 #, BYE."""
    keys = {"offer_pt": offer[0], "offer_codec": offer[1]}
    return SippOptions(
        "uac_pcap_xheader.xml", audio_pcap=audio, keys=keys, timeout=40, **to_agent(sip, agent_id)
    )


def assert_ok(result: SippResult) -> None:
    assert result.ok, result.summary()


# --- incoming calls -----------------------------------------------------------------------------------


async def test_x_headers_become_the_context_of_a_pcma_call_that_the_callers_bye_ends(
    sip: SipServer, make_sip_agent, tmp_path: Path
) -> None:
    agent = await make_sip_agent()
    result = await run_sipp(pcap_call(sip, agent, SIPP_PCAPS / "g711a.pcap", ("8", "PCMA/8000")), tmp_path)
    assert_ok(result)
    call = await ended(sip.server, (await only_call_of(sip.server, agent))["callId"])
    assert call["templateContext"]["customer"] == {"plan": "pro"}
    assert call["templateContext"]["order_id"] == 42
    assert call["joined"] is not None and call["endReason"] == "hangup"
    assert await events_of_type(sip.server, call["callId"], "joined")


async def test_rfc4733_digits_arrive_as_dtmf_events(sip: SipServer, make_sip_agent, tmp_path: Path) -> None:
    agent = await make_sip_agent()
    audio = pcmu_pcap(tmp_path / "pcmu.pcap")
    assert_ok(await run_sipp(pcap_call(sip, agent, audio, ("0", "PCMU/8000")), tmp_path / "sipp"))
    call = await ended(sip.server, (await only_call_of(sip.server, agent))["callId"])
    digits = [event["extras"]["digit"] for event in await events_of_type(sip.server, call["callId"], "dtmf")]
    assert digits == ["1", "2", "#"]


async def test_a_call_over_tcp_is_answered_and_ended_like_one_over_udp(
    sip: SipServer, make_sip_agent, tmp_path: Path
) -> None:
    agent = await make_sip_agent()
    options = pcap_call(sip, agent, SIPP_PCAPS / "g711a.pcap", ("8", "PCMA/8000"))
    assert_ok(await run_sipp(replace(options, transport="tcp"), tmp_path))
    call = await ended(sip.server, (await only_call_of(sip.server, agent))["callId"])
    assert call["joined"] is not None and call["endReason"] == "hangup"


async def test_calls_complete_when_ten_percent_of_the_messages_are_lost(
    sip: SipServer, make_sip_agent, tmp_path: Path
) -> None:
    agent = await make_sip_agent()
    calls = 5
    options = SippOptions("uac_lossy.xml", lost=10, calls=calls, rate=2, timeout=90, **to_agent(sip, agent))
    assert_ok(await run_sipp(options, tmp_path))

    async def all_ended() -> list[dict[str, Any]] | None:
        async with sip.server.api() as api:
            results = (await api.get("/api/calls", params={"agentId": agent})).json()["results"]
        return results if len(results) == calls and all(call["ended"] for call in results) else None

    results = await wait_for(all_ended, within=40)
    assert {call["endReason"] for call in results} == {"hangup"}


async def test_a_cancel_while_ringing_gets_487_and_ends_the_call_unjoined(
    sip: SipServer, make_sip_agent, tmp_path: Path
) -> None:
    agent = await make_sip_agent()
    result = await run_sipp(SippOptions("uac_cancel.xml", timeout=20, **to_agent(sip, agent)), tmp_path)
    assert_ok(result)
    assert 487 in result.statuses_received()
    call = await ended(sip.server, (await only_call_of(sip.server, agent))["callId"])
    assert call["endReason"] == "unjoined" and call["joined"] is None


async def test_a_source_outside_the_allowed_cidrs_gets_403(
    sip: SipServer, make_sip_agent, no_source_allowed: None, tmp_path: Path
) -> None:
    agent = await make_sip_agent()
    options = SippOptions("uac_expect.xml", keys=refusal(403), timeout=20, **to_agent(sip, agent))
    assert_ok(await run_sipp(options, tmp_path))


async def test_an_unknown_user_gets_404(sip: SipServer, tmp_path: Path) -> None:
    options = SippOptions(
        "uac_expect.xml", remote=sip.address, service="agent_nobody", keys=refusal(404), timeout=20
    )
    assert_ok(await run_sipp(options, tmp_path))


async def test_an_offer_with_no_common_codec_gets_488(sip: SipServer, make_sip_agent, tmp_path: Path) -> None:
    agent = await make_sip_agent()
    keys = refusal(488, codec=("97", "iLBC/8000"))
    assert_ok(
        await run_sipp(SippOptions("uac_expect.xml", keys=keys, timeout=20, **to_agent(sip, agent)), tmp_path)
    )


async def test_a_g722_callers_audio_comes_back_from_the_echo_agent(
    sip: SipServer, make_sip_agent, tmp_path: Path
) -> None:
    agent = await make_sip_agent()
    async with baresip(BaresipOptions(codec="G722"), tmp_path / "baresip") as phone:
        await phone.ctrl.dial(f"sip:agent_{agent}@{sip.address}")
        await phone.ctrl.wait_event(CALL_ESTABLISHED, within=15)
        await wait_for(lambda: heard_at_least(phone, 4.0), within=20)
        await phone.ctrl.hangup()
        await phone.ctrl.wait_event(CALL_CLOSED, within=10)
    trip = measure_round_trip(phone.sent(), phone.heard(), phone.options.rate)
    assert trip is not None, "baresip recorded nothing"
    assert 0 <= trip.lag_ms <= 500 and trip.correlation >= 0.9, trip
    call = await ended(sip.server, (await only_call_of(sip.server, agent))["callId"])
    assert call["endReason"] == "hangup"


async def heard_at_least(phone: Baresip, seconds: float) -> bool:
    """Whether baresip has recorded `seconds` of its call (for wait_for)."""
    return phone.heard_seconds() >= seconds


# --- outgoing calls -----------------------------------------------------------------------------------


async def test_an_outgoing_call_to_baresip_is_answered_and_the_api_hang_up_ends_it(
    sip: SipServer, tmp_path: Path
) -> None:
    async with baresip(BaresipOptions(codec="PCMU", answermode="auto"), tmp_path / "baresip") as phone:
        created = await dial_out(sip.server, phone.options.uri)
        await phone.ctrl.wait_event(CALL_ESTABLISHED, within=15)
        await joined(sip.server, created["callId"])
        await hang_up(sip.server, created["callId"])
        await phone.ctrl.wait_event(CALL_CLOSED, within=10)
    call = await ended(sip.server, created["callId"])
    assert call["endReason"] == "agent_hangup"


@pytest.mark.parametrize(
    ("scenario", "header"),
    [("uas_digest.xml", "Authorization"), ("uas_proxy_digest.xml", "Proxy-Authorization")],
)
async def test_an_outgoing_call_answers_a_digest_challenge(
    sip: SipServer, tmp_path: Path, scenario: str, header: str
) -> None:
    keys = {"auth_user": AUTH_USER, "auth_pass": AUTH_PASS}
    callee = SippOptions(scenario, rtp_echo=True, keys=keys, timeout=30)
    async with sipp(callee, tmp_path) as run:
        created = await dial_out(
            sip.server, f"sip:bot@{callee.address}", username=AUTH_USER, password=AUTH_PASS
        )
        await joined(sip.server, created["callId"])
        await hang_up(sip.server, created["callId"])
        result = await run.result()
    assert_ok(result)
    credentials = sent_credentials(result.messages, header)
    assert credentials is not None and digest_is_valid(credentials, "INVITE", AUTH_PASS), credentials
    assert (await ended(sip.server, created["callId"]))["endReason"] == "agent_hangup"


async def test_an_outgoing_call_over_tcp_is_answered_and_hung_up(sip: SipServer, tmp_path: Path) -> None:
    callee = SippOptions("uas_answer.xml", transport="tcp", rtp_echo=True, timeout=30)
    async with sipp(callee, tmp_path) as run:
        created = await dial_out(sip.server, f"sip:bot@{callee.address};transport=tcp")
        await joined(sip.server, created["callId"])
        await hang_up(sip.server, created["callId"])
        assert_ok(await run.result())
    assert (await ended(sip.server, created["callId"]))["endReason"] == "agent_hangup"


async def test_a_busy_callee_ends_the_call_unjoined_with_its_sip_status(
    sip: SipServer, tmp_path: Path
) -> None:
    callee = SippOptions("uas_busy.xml", timeout=20)
    async with sipp(callee, tmp_path) as run:
        created = await dial_out(sip.server, f"sip:bot@{callee.address}")
        call = await ended(sip.server, created["callId"], within=15)
        assert_ok(await run.result())
    assert call["endReason"] == "unjoined"
    statuses = await events_of_type(sip.server, created["callId"], "sip_status")
    assert [event["extras"]["code"] for event in statuses] == [486]


# --- isolation ----------------------------------------------------------------------------------------


async def test_a_sip_peer_vanishing_mid_call_leaves_the_other_calls_alone(
    sip: SipServer, make_sip_agent, twilio: FakeTwilio, tmp_path: Path
) -> None:
    vanishing_agent, staying_agent, twilio_agent = [await make_sip_agent() for _ in range(3)]
    audio = pcmu_pcap(tmp_path / "pcmu.pcap")
    twilio_call = asyncio.create_task(twilio.call(twilio_agent, CallScript(audio=speech_like(8.0))))
    try:
        vanishing_options = pcap_call(sip, vanishing_agent, audio, ("0", "PCMU/8000"))
        staying_options = pcap_call(sip, staying_agent, audio, ("0", "PCMU/8000"))
        async with (
            sipp(vanishing_options, tmp_path / "vanishing") as vanishing,
            sipp(staying_options, tmp_path / "staying") as staying,
        ):
            vanishing_call = await joined(
                sip.server, (await only_call_of(sip.server, vanishing_agent))["callId"]
            )
            await joined(sip.server, (await only_call_of(sip.server, staying_agent))["callId"])
            await vanishing.stop()  # SIGTERM/SIGKILL to the group: no BYE, no more RTP
            staying_result = await staying.result()
        report = await asyncio.wait_for(twilio_call, timeout=30)
    finally:
        twilio_call.cancel()
    assert_ok(staying_result)
    # The echo comes back (a playout gap while this process starts SIPp costs some correlation, a call the
    # vanished peer disturbed would lose all of it).
    assert report.round_trip is not None and report.round_trip.correlation >= 0.7, report.summary()
    staying_call = await ended(sip.server, (await only_call_of(sip.server, staying_agent))["callId"])
    assert staying_call["endReason"] == "hangup"
    vanished = await ended(sip.server, vanishing_call["callId"], within=RTP_TIMEOUT_S + 15)
    assert vanished["endReason"] == "connection_error"
