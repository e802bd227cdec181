"""Session timers and hold against the service in-process (the far end is tests/api/sip_phone.py).

The timers' timing is tested on a fake clock (tests/unit/sip/test_session_timer.py); here, what the
INVITE is answered, and a hold that lasts longer than the RTP timeout.
"""

# The fixtures (client, phone, agent_id) are test_sip_calls.py's, imported: their names are redefined
# as test arguments, which is how pytest hands them over.
# ruff: noqa: F811

from __future__ import annotations

import asyncio

import pytest
from starlette.testclient import TestClient

from app.sip.rtp_session import RtpSession
from app.sip.sdp import parse_sdp
from tests.api.sip_phone import Dialed, SipPhone, sdp_offer
from tests.api.test_sip_calls import (  # noqa: F401 (fixtures)
    PHONE_RTP,
    agent_id,
    answered_call,
    client,
    echoed,
    events_of,
    only_call,
    phone,
    wait_for_event,
)

RTP_TIMEOUT_S = 1.0
#: Gaps in the service's RTP this long are a hold that outlived the RTP timeout.
QUIET_S = RTP_TIMEOUT_S * 1.5
#: How long the service gets to go quiet after the hold is answered.
QUIET_WITHIN_S = 10.0


async def test_an_invite_with_session_expires_gets_it_back_with_require_timer(
    phone: SipPhone,
    agent_id: str,
) -> None:
    headers = {"Supported": "timer", "Session-Expires": "1800;refresher=uac"}
    phone.invite(f"agent_{agent_id}", sdp_offer("127.0.0.1", 4000), headers=headers)
    ok = await phone.response()
    assert ok.status == 200
    assert ok.headers.get("Session-Expires") == "1800;refresher=uac" and ok.headers.get("Require") == "timer"


async def test_an_invite_requiring_timer_is_answered_not_refused_420(
    phone: SipPhone,
    agent_id: str,
) -> None:
    headers = {"Require": "timer", "Supported": "timer", "Session-Expires": "90"}
    phone.invite(f"agent_{agent_id}", sdp_offer("127.0.0.1", 4000), headers=headers)
    assert (await phone.response()).status == 200


async def test_an_interval_under_90_s_gets_422_with_min_se_and_creates_no_call(
    client: TestClient,
    phone: SipPhone,
    agent_id: str,
) -> None:
    headers = {"Supported": "timer", "Session-Expires": "30"}
    phone.invite(f"agent_{agent_id}", sdp_offer("127.0.0.1", 4000), headers=headers)
    response = await phone.response()
    assert response.status == 422 and response.headers.get("Min-SE") == "90"
    assert client.get("/api/calls").json()["total"] == 0


async def quiet_stretch(rtp: RtpSession) -> None:
    """Wait until the service sends no RTP for QUIET_S (packets in flight as the hold began may come)."""
    async with asyncio.timeout(QUIET_WITHIN_S):
        while True:
            try:
                async with asyncio.timeout(QUIET_S):
                    await rtp.receive()
            except TimeoutError:
                return


async def reoffer(phone: SipPhone, dialed: Dialed, rtp: RtpSession, direction: str) -> bytes:
    """A re-INVITE offering `direction`, answered and ACKed; the answer's SDP."""
    offer = sdp_offer("127.0.0.1", rtp.local_port).replace(b"a=sendrecv", f"a={direction}".encode())
    phone.reinvite(dialed, offer)
    ok = await phone.response()
    assert ok.status == 200
    phone.ack(dialed, dialed.to_tag)
    return ok.body


@pytest.mark.parametrize("client", [{"rtp_timeout": RTP_TIMEOUT_S}], indirect=True)
async def test_a_hold_outlives_the_rtp_timeout_and_the_echo_comes_back_on_resume(
    client: TestClient,
    phone: SipPhone,
    agent_id: str,
) -> None:
    dialed, rtp = await answered_call(phone, agent_id)
    call_id = only_call(client)["callId"]
    try:
        await wait_for_event(client, call_id, "joined")
        await echoed(rtp, b"\x01" * 160)
        assert b"a=recvonly" in await reoffer(phone, dialed, rtp, "sendonly")
        await quiet_stretch(rtp)  # callbridge sends nothing, the phone sends nothing
        assert only_call(client)["ended"] is None
        answer = await reoffer(phone, dialed, rtp, "sendrecv")
        assert b"a=sendrecv" in answer
        rtp.configure("127.0.0.1", parse_sdp(answer).media[0].port, 0, 8000, 101, 160)
        await echoed(rtp, bytes(range(160)))
    finally:
        rtp.close()
    kinds = [event["type"] for event in events_of(client, call_id)]
    assert "sip_hold" in kinds and "sip_resume" in kinds and "ended" not in kinds


@pytest.mark.parametrize("client", [{"rtp_timeout": RTP_TIMEOUT_S}], indirect=True)
async def test_an_inactive_hold_also_outlives_the_rtp_timeout(
    client: TestClient,
    phone: SipPhone,
    agent_id: str,
) -> None:
    dialed, rtp = await answered_call(phone, agent_id)
    try:
        await wait_for_event(client, only_call(client)["callId"], "joined")
        assert b"a=inactive" in await reoffer(phone, dialed, rtp, "inactive")
        await quiet_stretch(rtp)
        assert only_call(client)["ended"] is None
    finally:
        rtp.close()


@pytest.mark.parametrize("client", [{"rtp_timeout": RTP_TIMEOUT_S}], indirect=True)
async def test_a_call_that_starts_on_hold_outlives_the_rtp_timeout(
    client: TestClient, phone: SipPhone, agent_id: str
) -> None:
    rtp = await RtpSession.open("127.0.0.1", PHONE_RTP)
    try:
        held = sdp_offer("127.0.0.1", rtp.local_port).replace(b"a=sendrecv", b"a=sendonly")
        dialed = phone.invite(f"agent_{agent_id}", held)
        ok = await phone.response()
        assert ok.status == 200 and b"a=recvonly" in ok.body
        phone.ack(dialed, ok.to.tag or "")
        rtp.configure("127.0.0.1", parse_sdp(ok.body).media[0].port, 0, 8000, 101, 160)
        await wait_for_event(client, only_call(client)["callId"], "joined")
        await quiet_stretch(rtp)
        assert only_call(client)["ended"] is None
    finally:
        rtp.close()
