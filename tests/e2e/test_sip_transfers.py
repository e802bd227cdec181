"""SIP cold transfers end to end (ARCHITECTURE §3.1): REFER to a SIPp callee that takes it or refuses it, the
opt-in bridge fallback, and a bridged transfer whose two legs (baresip and a SIPp echo) hear each other.

callbridge dials the first leg (an outgoing call to the peer) and the transfer goes through
`send_data_message` `cold_transfer`; the echo agent is the agent being transferred away from."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.simulator.audio import measure_round_trip
from tests.conftest import RunningServer, ended, get_call, wait_for
from tests.e2e import test_sip_calls
from tests.e2e.test_sip_calls import (
    SipServer,
    assert_ok,
    dial_out,
    events_of_type,
    hang_up,
    heard_at_least,
    joined,
    only_call_of,
    patch_sip_policy,
    running_sip_server,
    to_agent,
)
from tests.sip_peers.baresip import BaresipOptions, baresip
from tests.sip_peers.ctrl_tcp import CALL_CLOSED, CALL_ESTABLISHED
from tests.sip_peers.ports import HOST, free_sip_port
from tests.sip_peers.sipp import SippOptions, sipp
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

#: This module's own SIP server (test_sip_calls' fixtures, instantiated for this module).
sip_server = test_sip_calls.sip_server
sip = test_sip_calls.sip
make_sip_agent = test_sip_calls.make_sip_agent

NOTE = {"X-Transfer-Note": "vip caller"}


async def cold_transfer(server: RunningServer, call_id: str, **message: Any) -> tuple[int, dict[str, Any]]:
    """`send_data_message` `cold_transfer`: (status code, JSON body or {})."""
    async with server.api() as api:
        response = await api.post(
            f"/api/calls/{call_id}/send_data_message",
            json={"type": "cold_transfer", **message},
            timeout=90,
        )
    return response.status_code, response.json() if response.content else {}


def seconds(duration: str) -> float:
    """A Duration as the API writes it ("12s", "0.5s")."""
    return float(duration.removesuffix("s"))


async def transfer_outcomes(server: RunningServer, call_id: str) -> list[str]:
    return [
        event["extras"]["outcome"]
        for event in await events_of_type(server, call_id, "transfer")
        if "outcome" in event["extras"]
    ]


async def sip_transfer_texts(server: RunningServer, call_id: str) -> list[str]:
    return [event["text"] for event in await events_of_type(server, call_id, "sip_transfer")]


async def test_a_refer_taken_with_a_final_notify_200_transfers_the_caller_and_the_agent_leaves(
    sip: SipServer, tmp_path: Path
) -> None:
    callee = SippOptions("uas_refer_accept.xml", rtp_echo=True, timeout=30)
    target = f"sip:desk@{HOST}:{free_sip_port()}"
    async with sipp(callee, tmp_path) as run:
        created = await dial_out(sip.server, f"sip:bot@{callee.address}")
        await joined(sip.server, created["callId"])
        status, body = await cold_transfer(sip.server, created["callId"], target=target, extraHeaders=NOTE)
        assert status == 204, body
        result = await run.result()
    assert_ok(result)  # 202, NOTIFY 100 and 200 answered, then callbridge's BYE
    assert f"REFER to {target} referred by sip:" in result.actions
    assert "X-Transfer-Note: vip caller" in result.messages
    call = await ended(sip.server, created["callId"])
    assert call["endReason"] == "agent_hangup"
    assert await transfer_outcomes(sip.server, created["callId"]) == ["transferred"]
    assert seconds(call["sipDetails"]["billedDuration"]) > 0


async def test_an_incoming_callers_refer_to_a_number_is_sent_to_the_callers_host(
    sip: SipServer, make_sip_agent, tmp_path: Path
) -> None:
    agent = await make_sip_agent()
    caller = SippOptions("uac_refer_accept.xml", rtp_echo=True, timeout=30, **to_agent(sip, agent))
    async with sipp(caller, tmp_path) as run:
        call_id = (await only_call_of(sip.server, agent))["callId"]
        await joined(sip.server, call_id)
        status, body = await cold_transfer(sip.server, call_id, target="+14155550100")
        assert status == 204, body
        result = await run.result()
    assert_ok(result)
    assert f"REFER to sip:+14155550100@{HOST}:{caller.port};user=phone" in result.actions
    call = await ended(sip.server, call_id)
    assert call["endReason"] == "agent_hangup"
    assert await transfer_outcomes(sip.server, call_id) == ["transferred"]


async def test_a_refused_refer_leaves_the_caller_with_the_agent_and_says_why(
    sip: SipServer, tmp_path: Path
) -> None:
    callee = SippOptions("uas_refer_refuse.xml", rtp_echo=True, timeout=30)
    async with sipp(callee, tmp_path) as run:
        created = await dial_out(sip.server, f"sip:bot@{callee.address}")
        await joined(sip.server, created["callId"])
        status, body = await cold_transfer(sip.server, created["callId"], target="+14155550100")
        assert status == 502 and "501 Not Implemented" in body["detail"], body
        assert (await get_call(sip.server, created["callId"]))["ended"] is None
        await hang_up(sip.server, created["callId"])
        result = await run.result()
    assert_ok(result)
    assert "REFER to sip:+14155550100@" in result.actions
    call = await ended(sip.server, created["callId"])
    assert call["endReason"] == "agent_hangup"
    assert await transfer_outcomes(sip.server, created["callId"]) == ["failed"]


async def test_a_refused_refer_with_fallback_to_bridge_bridges_the_caller_to_the_target(
    sip: SipServer, tmp_path: Path
) -> None:
    callee = SippOptions("uas_refer_refuse.xml", rtp_echo=True, timeout=40)
    # The target answers, stays 2 s, and hangs up: its BYE must end the caller's leg too.
    desk = SippOptions("uas_answer_then_bye.xml", rtp_echo=True, timeout=40, extra=("-d", "2000"))
    async with sipp(callee, tmp_path / "callee") as caller_run, sipp(desk, tmp_path / "desk") as desk_run:
        created = await dial_out(sip.server, f"sip:bot@{callee.address}")
        call_id = created["callId"]
        await joined(sip.server, call_id)
        status, body = await cold_transfer(
            sip.server, call_id, target=f"sip:desk@{desk.address}", fallbackToBridge=True, extraHeaders=NOTE
        )
        assert status == 204, body
        desk_result = await desk_run.result()
        caller_result = await caller_run.result()
    assert_ok(desk_result)
    assert_ok(caller_result)  # callbridge's BYE reached the caller after the target's
    assert "X-Transfer-Note: vip caller" in desk_result.actions
    call = await ended(sip.server, call_id)
    assert call["endReason"] == "agent_hangup"
    assert await transfer_outcomes(sip.server, call_id) == ["transferred"]
    texts = await wait_for(lambda: bridge_ended(sip.server, call_id), within=15)
    assert any("501 Not Implemented; bridging to" in text for text in texts), texts
    assert texts[-1] == "the bridge ended: the transfer target hung up"
    # Both legs bill: the target's from its INVITE, the caller's until the bridge ended.
    billed = seconds((await get_call(sip.server, call_id))["sipDetails"]["billedDuration"])
    assert billed >= seconds(call["billedDuration"]) + 6


async def test_a_bridged_calls_billed_callback_comes_once_the_bridge_ended_with_the_final_billing(
    sip: SipServer, tmp_path: Path
) -> None:
    callee = SippOptions("uas_refer_refuse.xml", rtp_echo=True, timeout=40)
    desk = SippOptions("uas_answer_then_bye.xml", rtp_echo=True, timeout=40, extra=("-d", "2000"))
    async with WebhookReceiver() as receiver:
        callbacks = {"ended": {"url": receiver.url}, "billed": {"url": receiver.url}}
        async with sipp(callee, tmp_path / "callee") as caller_run, sipp(desk, tmp_path / "desk") as desk_run:
            created = await dial_out(sip.server, f"sip:bot@{callee.address}", call={"callbacks": callbacks})
            call_id = created["callId"]
            await joined(sip.server, call_id)
            target = f"sip:desk@{desk.address}"
            status, body = await cold_transfer(
                sip.server, call_id, target=target, fallbackToBridge=True, extraHeaders=NOTE
            )
            assert status == 204, body
            assert_ok(await desk_run.result())
            assert_ok(await caller_run.result())
        sent = [orjson.loads((await asyncio.wait_for(receiver.received.get(), 20))[1]) for _ in range(2)]
    assert [body["event"] for body in sent] == ["call.ended", "call.billed"]
    at_end, billed = (body["call"]["sipDetails"]["billedDuration"] for body in sent)
    assert sent[1]["call"]["sipDetails"] == (await get_call(sip.server, call_id))["sipDetails"]
    assert seconds(billed) > seconds(at_end)  # the bridge and the second leg came after the agent's end


async def bridge_ended(server: RunningServer, call_id: str) -> list[str] | None:
    texts = await sip_transfer_texts(server, call_id)
    return texts if texts and texts[-1].startswith("the bridge ended") else None


@pytest.mark.parametrize("codec", ["PCMU", "G722"])
async def test_a_bridged_transfer_relays_each_legs_audio_to_the_other(
    sip: SipServer, tmp_path: Path, codec: str
) -> None:
    # The target (SIPp, PCMU) sends back only what it receives: what baresip hears after the agent left
    # crossed the bridge twice. G.722 on baresip's side makes the bridge transcode; PCMU relays as is.
    desk = SippOptions("uas_answer.xml", rtp_echo=True, timeout=60)
    async with (
        sipp(desk, tmp_path / "desk") as desk_run,
        baresip(BaresipOptions(codec=codec, answermode="auto", prompt_seconds=40), tmp_path / "bs") as phone,
    ):
        created = await dial_out(sip.server, phone.options.uri)
        call_id = created["callId"]
        await phone.ctrl.wait_event(CALL_ESTABLISHED, within=15)
        await joined(sip.server, call_id)
        status, body = await cold_transfer(
            sip.server, call_id, target=f"sip:desk@{desk.address}", sipVerb="INVITE"
        )
        assert status == 204, body
        await ended(sip.server, call_id)
        bridged_at = phone.heard_seconds() + 0.5
        await wait_for(lambda: heard_at_least(phone, bridged_at + 4.0), within=20)
        await phone.ctrl.hangup()
        await phone.ctrl.wait_event(CALL_CLOSED, within=10)
        assert_ok(await desk_run.result())  # the caller's BYE reached the target
    rate = phone.options.rate
    start = int(bridged_at * rate) * 2
    trip = measure_round_trip(phone.sent()[start:], phone.heard()[start:], rate)
    assert trip is not None and trip.correlation >= 0.8 and 0 <= trip.lag_ms <= 1000, trip
    ends = [
        e
        for e in await events_of_type(sip.server, call_id, "sip_transfer")
        if "packetsToTarget" in e["extras"]
    ]
    ends = ends or [await wait_for(lambda: bridge_end_event(sip.server, call_id), within=10)]
    assert ends[-1]["extras"]["packetsToTarget"] > 100 and ends[-1]["extras"]["packetsToCaller"] > 100
    assert (await get_call(sip.server, call_id))["endReason"] == "agent_hangup"
    mode = "relayed as is" if codec == "PCMU" else "transcoded"
    assert any(f"{codec} ↔ PCMU, {mode}" in text for text in await sip_transfer_texts(sip.server, call_id))


async def bridge_end_event(server: RunningServer, call_id: str) -> dict[str, Any] | None:
    for event in await events_of_type(server, call_id, "sip_transfer"):
        if "packetsToTarget" in event["extras"]:
            return event
    return None


async def test_a_server_shutting_down_hangs_up_both_legs_of_a_bridge(sip: SipServer, tmp_path: Path) -> None:
    # Its own server, stopped mid-bridge (`sip` only checks the peers are installed; it stays up).
    caller = SippOptions("uas_answer.xml", rtp_echo=True, timeout=40)
    desk = SippOptions("uas_answer.xml", rtp_echo=True, timeout=40)
    (tmp_path / "server").mkdir()
    with running_sip_server(tmp_path / "server", rtp_ports=20) as running:
        server = running.server
        await patch_sip_policy(server, {"allowedCidrRanges": ["127.0.0.1/32"]})
        async with sipp(caller, tmp_path / "caller") as caller_run, sipp(desk, tmp_path / "desk") as desk_run:
            call_id = (await dial_out(server, f"sip:bot@{caller.address}"))["callId"]
            await joined(server, call_id)
            status, body = await cold_transfer(
                server, call_id, target=f"sip:desk@{desk.address}", sipVerb="INVITE"
            )
            assert status == 204, body
            assert (await ended(server, call_id))["endReason"] == "agent_hangup"
            server.process.terminate()  # SIGTERM: drain, then stop
            assert_ok(await caller_run.result())  # each leg got callbridge's BYE
            assert_ok(await desk_run.result())
