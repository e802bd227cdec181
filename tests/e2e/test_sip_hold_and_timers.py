"""Hold and session timers end to end: a real `callbridge serve` (RTP timeout 2 s) and SIPp peers.

SIPp does the signalling; for the hold, the call's media goes to an RTP socket of the test's own (the SDP
names it), which checks the echo agent's audio before the hold and after the resume. Session timers:
SIPp checks the headers (RFC 4028's minimum interval is 90 s, so refresh and expiry timing are tested on
a fake clock in tests/unit/sip/test_session_timer.py and test_leg_session_timer.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from app.sip.ports import RtpPortRange
from app.sip.rtp_session import RtpAudio, RtpSession
from tests.conftest import ended, get_call, wait_for
from tests.e2e.test_sip_calls import (
    SIP_POLICY,
    SipServer,
    assert_ok,
    dial_out,
    events_of_type,
    hang_up,
    joined,
    only_call_of,
    patch_sip_policy,
    require_sip_peers,
    running_sip_server,
    to_agent,
)
from tests.sip_peers.ports import HOST, rtp_port_range
from tests.sip_peers.sipp import SippOptions, run_sipp, sipp

pytestmark = pytest.mark.e2e

RTP_TIMEOUT_S = 2.0
#: The test's RTP socket hears nothing from callbridge for this long: callbridge stopped sending.
QUIET_S = 1.5
ECHO_WAIT_S = 10.0
_ANSWER_PORT = re.compile(r"message received.*?SIP/2\.0 200 OK.*?m=audio (\d+)", re.S)


@pytest.fixture(scope="module")
def sip_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SipServer]:
    """This module's own server: SIP on UDP and TCP, and an RTP timeout shorter than uac_hold.xml's hold."""
    require_sip_peers()
    directory = tmp_path_factory.mktemp("sip-hold-server")
    with running_sip_server(directory, "udp,tcp", CALLBRIDGE_RTP_TIMEOUT=str(RTP_TIMEOUT_S)) as running:
        yield running


@pytest.fixture(scope="module")
async def sip(sip_server: SipServer) -> SipServer:
    await patch_sip_policy(sip_server.server, SIP_POLICY)
    return sip_server


@pytest.fixture
async def agent(sip: SipServer) -> str:
    """A new echo agent on the server."""
    async with sip.server.api() as api:
        response = await api.post("/api/agents", json={"name": "sip-hold", "callTemplate": {}})
        assert response.status_code == 201, response.text
        return response.json()["agentId"]


@pytest.fixture
async def phone_rtp() -> AsyncIterator[RtpSession]:
    first, last = rtp_port_range(20)
    rtp = await RtpSession.open(HOST, RtpPortRange(first, last))
    yield rtp
    rtp.close()


class Talker:
    """Sends one PCMU payload every 20 ms to callbridge, unless on hold (a held phone is silent)."""

    def __init__(self, rtp: RtpSession) -> None:
        self.rtp = rtp
        self.payload = b"\x11" * 160
        self.held = False

    async def run(self) -> None:
        while True:
            if not self.held:
                self.rtp.send_audio(self.payload)
            await asyncio.sleep(0.02)

    async def echoed(self, payload: bytes) -> None:
        """Talk `payload` until the echo agent sends it back."""
        self.payload = payload
        async with asyncio.timeout(ECHO_WAIT_S):
            while True:
                item = await self.rtp.receive()
                if isinstance(item, RtpAudio) and item.payload == payload:
                    return

    async def quiet(self) -> None:
        """Wait until callbridge sends nothing for QUIET_S (packets already in flight may still come)."""
        async with asyncio.timeout(ECHO_WAIT_S):
            while True:
                try:
                    async with asyncio.timeout(QUIET_S):
                        await self.rtp.receive()
                except TimeoutError:
                    return


def answer_port(messages_log: Path) -> int | None:
    """The RTP port in callbridge's 200 to the first INVITE, once SIPp's message trace has it."""
    text = messages_log.read_text(errors="replace") if messages_log.exists() else ""
    match = _ANSWER_PORT.search(text)
    return int(match.group(1)) if match else None


async def callbridge_rtp_port(messages_log: Path) -> int:
    async def found() -> int | None:
        return answer_port(messages_log)

    return await wait_for(found, within=10)


async def test_a_hold_by_reinvite_outlives_the_rtp_timeout_and_the_echo_comes_back_on_resume(
    sip: SipServer, agent: str, phone_rtp: RtpSession, tmp_path: Path
) -> None:
    options = SippOptions(
        "uac_hold.xml", keys={"rtp_port": str(phone_rtp.local_port)}, timeout=30, **to_agent(sip, agent)
    )
    talker = Talker(phone_rtp)
    async with sipp(options, tmp_path) as run:
        call_id = (await only_call_of(sip.server, agent))["callId"]
        await joined(sip.server, call_id)
        phone_rtp.configure(HOST, await callbridge_rtp_port(tmp_path / "messages.log"), 0, 8000, 101, 160)
        talking = asyncio.create_task(talker.run())
        try:
            await talker.echoed(b"\x22" * 160)
            await wait_for(lambda: events_of_type(sip.server, call_id, "sip_hold"), within=10)
            talker.held = True
            await talker.quiet()
            assert (await get_call(sip.server, call_id))["ended"] is None
            await wait_for(lambda: events_of_type(sip.server, call_id, "sip_resume"), within=10)
            talker.held = False
            await talker.echoed(b"\x33" * 160)
            result = await run.result()
        finally:
            talking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await talking
    assert_ok(result)  # SIPp got recvonly for its sendonly, sendrecv for sendrecv, and no BYE of ours
    assert (await ended(sip.server, call_id))["endReason"] == "hangup"


@pytest.mark.parametrize("refresher", ["uac", "uas"])
async def test_session_timers_are_negotiated_with_a_sipp_caller(
    sip: SipServer, agent: str, tmp_path: Path, refresher: str
) -> None:
    keys = {"refresher": refresher, "rtp_port": "40000"}  # nobody listens there: signalling only
    options = SippOptions("uac_session_timer.xml", keys=keys, timeout=20, **to_agent(sip, agent))
    result = await run_sipp(options, tmp_path)
    assert_ok(result)  # 422 with Min-SE 90, then Session-Expires and Require: timer, the UPDATE's 200
    call = await ended(sip.server, (await only_call_of(sip.server, agent))["callId"])
    assert call["endReason"] == "hangup"


async def test_an_outgoing_call_asked_for_a_longer_interval_by_422_retries_with_it(
    sip: SipServer, tmp_path: Path
) -> None:
    callee = SippOptions("uas_session_timer.xml", rtp_echo=True, timeout=20)
    async with sipp(callee, tmp_path) as run:
        created = await dial_out(sip.server, f"sip:bot@{callee.address}")
        await joined(sip.server, created["callId"])
        await hang_up(sip.server, created["callId"])
        assert_ok(await run.result())
    assert (await ended(sip.server, created["callId"]))["endReason"] == "agent_hangup"
