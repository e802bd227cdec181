"""SIP calls against the service in-process: what an INVITE gets, how a call runs, how it ends.

The far end is a hand-written SIP phone (tests/api/sip_phone.py) on UDP loopback; real peers (SIPp,
baresip) call a real `callbridge serve` in tests/e2e/test_sip_calls.py.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from app.main import create_app
from app.sip.message import SipRequest
from app.sip.ports import RtpPortRange
from app.sip.rtp_session import RtpAudio, RtpSession
from app.sip.sdp import parse_sdp
from tests.api.sip_phone import Dialed, SipPhone, sdp_offer
from tests.conftest import API_KEY, make_settings, wait_for

PHONE_RTP = RtpPortRange(42000, 42198)
EVENT_WAIT_S = 10.0


def sip_client(tmp_path: Path, **overrides: Any) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, sip_listen="udp:127.0.0.1:0", rtp_ports="41000-41198", **overrides)
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        allowed = {"allowedCidrRanges": ["127.0.0.1/32"], "allowAllAgents": True}
        assert client.patch("/api/sip", json=allowed).status_code == 200
        yield client


@pytest.fixture
def client(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    overrides = getattr(request, "param", {})
    yield from sip_client(tmp_path, **overrides)


def server_of(client: TestClient) -> tuple[str, int]:
    sip = client.app.state.services.sip  # type: ignore[attr-defined]
    return "127.0.0.1", sip.ua.transports.local("udp").port


@pytest.fixture
async def phone(client: TestClient) -> AsyncIterator[SipPhone]:
    phone = await SipPhone("127.0.0.1", server_of(client)).open()
    yield phone
    phone.close()


@pytest.fixture
def agent_id(client: TestClient) -> str:
    return new_agent(client, {})


def new_agent(client: TestClient, template: dict[str, Any]) -> str:
    response = client.post("/api/agents", json={"name": "sip", "callTemplate": template})
    assert response.status_code == 201, response.text
    return response.json()["agentId"]


def events_of(client: TestClient, call_id: str) -> list[dict[str, Any]]:
    return client.get(f"/api/calls/{call_id}/events", params={"pageSize": 200}).json()["results"]


async def wait_for_event(client: TestClient, call_id: str, kind: str) -> dict[str, Any]:
    deadline = time.monotonic() + EVENT_WAIT_S
    while time.monotonic() < deadline:
        found = [e for e in events_of(client, call_id) if e["type"] == kind]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {kind} event in {[e['type'] for e in events_of(client, call_id)]}")


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait (bounded) until `condition` holds: what the server does in its own thread."""
    deadline = time.monotonic() + EVENT_WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition never held")
        await asyncio.sleep(0.05)


def only_call(client: TestClient) -> dict[str, Any]:
    calls = client.get("/api/calls").json()["results"]
    assert len(calls) == 1, calls
    return calls[0]


async def answered_call(phone: SipPhone, agent_id: str, **invite: Any) -> tuple[Dialed, RtpSession]:
    """Call the agent, take the 200 and ACK it; the phone's RTP points at the service's."""
    rtp = await RtpSession.open("127.0.0.1", PHONE_RTP)
    dialed = phone.invite(f"agent_{agent_id}", sdp_offer("127.0.0.1", rtp.local_port), **invite)
    ok = await phone.response()
    assert ok.status == 200, ok.status
    phone.ack(dialed, ok.to.tag or "")
    answer = parse_sdp(ok.body)
    rtp.configure("127.0.0.1", answer.media[0].port, 0, 8000, 101, 160)
    return dialed, rtp


async def echoed(rtp: RtpSession, payload: bytes) -> None:
    """Send `payload` until the echo agent's copy of it comes back on `rtp`."""
    async with asyncio.timeout(EVENT_WAIT_S):
        while True:
            rtp.send_audio(payload)
            item = await rtp.receive()
            if isinstance(item, RtpAudio) and item.payload == payload:
                return


async def joined_call(client: TestClient, phone: SipPhone, agent_id: str) -> tuple[Dialed, RtpSession, str]:
    """`answered_call`, then the call's id once it has joined."""
    dialed, rtp = await answered_call(phone, agent_id)
    call_id = only_call(client)["callId"]
    await wait_for_event(client, call_id, "joined")
    return dialed, rtp, call_id


# --- refusals ---------------------------------------------------------------------------------


async def test_options_outside_a_dialog_is_answered_200_with_what_callbridge_allows(phone: SipPhone) -> None:
    phone.send(
        f"OPTIONS sip:{phone.server[0]}:{phone.server[1]} SIP/2.0\r\n{phone.via()}"
        f"From: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:{phone.server[0]}>\r\n"
        "Call-ID: options-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    response = await phone.response("OPTIONS")
    assert response.status == 200 and "INVITE" in (response.headers.get("Allow") or "")


async def test_an_invite_from_outside_the_allowed_ranges_gets_403_and_creates_no_call(
    client: TestClient, agent_id: str
) -> None:
    outsider = await SipPhone("127.0.0.2", server_of(client)).open()
    try:
        outsider.invite(f"agent_{agent_id}", sdp_offer("127.0.0.2", 4000))
        first = await outsider.response(final=False)
    finally:
        outsider.close()
    assert first.status == 403  # not even a 100 first
    assert client.get("/api/calls").json()["total"] == 0


async def test_an_invite_to_a_user_no_route_matches_gets_404(client: TestClient, phone: SipPhone) -> None:
    phone.invite("sales", sdp_offer("127.0.0.1", 4000))
    assert (await phone.response()).status == 404
    assert client.get("/api/calls").json()["total"] == 0


async def test_a_user_matched_by_a_pattern_reaches_that_agent(client: TestClient, phone: SipPhone) -> None:
    agent = new_agent(client, {})
    client.patch("/api/sip", json={"allowedAgents": [{"agentId": agent, "toUserPattern": "sales|support"}]})
    phone.invite("support", sdp_offer("127.0.0.1", 4000))
    assert (await phone.response()).status == 200
    assert only_call(client)["agentId"] == agent


async def test_an_offer_without_a_supported_codec_gets_488_with_a_warning(
    client: TestClient, phone: SipPhone, agent_id: str
) -> None:
    phone.invite(f"agent_{agent_id}", sdp_offer("127.0.0.1", 4000, "97", "a=rtpmap:97 iLBC/8000"))
    response = await phone.response()
    assert response.status == 488
    assert "iLBC" in (response.headers.get("Warning") or "")
    assert client.get("/api/calls").json()["total"] == 0


@pytest.mark.needs_opus
async def test_an_offer_of_amr_wb_only_gets_488_with_a_warning_naming_the_supported_codecs(
    phone: SipPhone, agent_id: str
) -> None:
    phone.invite(f"agent_{agent_id}", sdp_offer("127.0.0.1", 4000, "98", "a=rtpmap:98 AMR-WB/16000"))
    response = await phone.response()
    assert (response.status, response.headers.get("Warning")) == (
        488,
        '305 callbridge "Incompatible media format: offered AMR-WB/16000; '
        'supported opus/48000/2, G722/8000, PCMU/8000, PCMA/8000"',
    )


async def test_an_invite_without_an_sdp_offer_gets_488(
    client: TestClient, phone: SipPhone, agent_id: str
) -> None:
    phone.invite(f"agent_{agent_id}", b"")
    assert (await phone.response()).status == 488
    assert client.get("/api/calls").json()["total"] == 0


@pytest.mark.parametrize("client", [{"max_concurrent_calls": 1}], indirect=True)
async def test_an_invite_beyond_the_call_limit_gets_503_with_retry_after(
    client: TestClient, phone: SipPhone, agent_id: str
) -> None:
    waiting = client.post("/api/calls", json={"medium": {"serverWebSocket": {"inputSampleRate": 8000}}})
    assert waiting.status_code == 201
    phone.invite(f"agent_{agent_id}", sdp_offer("127.0.0.1", 4000))
    response = await phone.response()
    assert response.status == 503 and int(response.headers.get("Retry-After") or 0) > 0


async def test_an_invite_requiring_an_extension_callbridge_lacks_gets_420(
    client: TestClient, phone: SipPhone, agent_id: str
) -> None:
    phone.invite(f"agent_{agent_id}", sdp_offer("127.0.0.1", 4000), headers={"Require": "100rel"})
    response = await phone.response()
    assert response.status == 420 and response.headers.get("Unsupported") == "100rel"
    assert client.get("/api/calls").json()["total"] == 0


async def test_a_request_in_a_dialog_from_outside_the_allowed_ranges_gets_403(client: TestClient) -> None:
    outsider = await SipPhone("127.0.0.2", server_of(client)).open()
    try:
        outsider.bye(Dialed("some-call", "a", "b", "agent_x"))
        response = await outsider.response("BYE")
    finally:
        outsider.close()
    assert response.status == 403


async def test_a_malformed_request_from_an_allowed_source_gets_400(phone: SipPhone) -> None:
    phone.send(
        f"INVITE sip:x@{phone.server[0]} SIP/2.0\r\n{phone.via()}"
        "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: bad-1\r\n"
        "CSeq: 1 INVITE\r\nContent-Length: 999\r\n\r\nshort"
    )
    assert (await phone.response()).status == 400


async def test_a_request_for_an_unknown_dialog_gets_481(phone: SipPhone) -> None:
    phone.bye(Dialed("no-such-call", "a", "b", "agent_x"))
    assert (await phone.response("BYE")).status == 481


# --- answering and running --------------------------------------------------------------------


async def test_an_invite_is_answered_100_180_200_with_sdp_and_joins_on_ack(
    client: TestClient, phone: SipPhone, agent_id: str
) -> None:
    dialed = phone.invite(f"agent_{agent_id}", sdp_offer("127.0.0.1", 4000))
    responses = [await phone.response(final=False) for _ in range(3)]
    assert [response.status for response in responses] == [100, 180, 200]
    assert responses[2].headers.get("Content-Type") == "application/sdp"
    assert only_call(client)["joined"] is None
    phone.ack(dialed, responses[2].to.tag or "")
    await wait_for_event(client, only_call(client)["callId"], "joined")


async def test_the_answer_carries_the_invites_record_route_back(phone: SipPhone, agent_id: str) -> None:
    routes = "<sip:proxy1.example.com;lr>, <sip:proxy2.example.com;lr>"
    phone.invite(f"agent_{agent_id}", sdp_offer("127.0.0.1", 4000), headers={"Record-Route": routes})
    ringing = await phone.response(final=False)
    while ringing.status != 180:
        ringing = await phone.response(final=False)
    ok = await phone.response()
    expected = ["<sip:proxy1.example.com;lr>", "<sip:proxy2.example.com;lr>"]
    assert ringing.headers.get_all("Record-Route") == expected
    assert ok.headers.get_all("Record-Route") == expected


async def test_caller_audio_comes_back_from_the_echo_agent(
    client: TestClient, phone: SipPhone, agent_id: str
) -> None:
    _, rtp = await answered_call(phone, agent_id)
    tone = bytes(range(0, 160))  # any μ-law bytes: the echo agent takes PCMU as it is
    try:
        for _ in range(25):
            rtp.send_audio(tone)
            await asyncio.sleep(0.02)
        heard: list[bytes] = []
        async with asyncio.timeout(EVENT_WAIT_S):
            while tone not in heard:
                item = await rtp.receive()
                if isinstance(item, RtpAudio):
                    heard.append(item.payload)
    finally:
        rtp.close()
    call = only_call(client)
    joined = await wait_for_event(client, call["callId"], "joined")
    assert joined["extras"]["wireFormat"] == "PCMU 8000 Hz" and joined["extras"]["resampled"] is False


async def test_x_headers_become_template_context(client: TestClient, phone: SipPhone, agent_id: str) -> None:
    _, rtp = await answered_call(
        phone, agent_id, headers={"X-Customer": '{"plan": "pro"}', "X-Order-Id": "42", "X-Note": "hello"}
    )
    rtp.close()
    context = only_call(client)["templateContext"]
    assert context["customer"] == {"plan": "pro"} and context["order_id"] == 42 and context["note"] == "hello"
    assert context["callbridge"]["sip"]["caller_id"] == "+15550001111"


async def test_the_callers_bye_ends_the_call_hangup(
    client: TestClient, phone: SipPhone, agent_id: str
) -> None:
    dialed, rtp, call_id = await joined_call(client, phone, agent_id)
    phone.bye(dialed)
    assert (await phone.response("BYE")).status == 200
    ended = await wait_for_event(client, call_id, "ended")
    rtp.close()
    assert ended["extras"]["endReason"] == "hangup"


async def test_an_ended_sip_call_is_freed_by_reference_counting_alone(
    client: TestClient, phone: SipPhone, agent_id: str, no_cycle_collector: None
) -> None:
    # Left in a reference cycle, the call would wait for the collector's full pass, which pauses every call.
    dialed, rtp, call_id = await joined_call(client, phone, agent_id)
    session = client.app.state.services.sessions.get(call_id)  # type: ignore[attr-defined]
    assert session is not None
    parts = {"session": session, "transport": session.transport, "leg": session.transport._leg}
    alive = {name: weakref.ref(part) for name, part in parts.items()}
    del session, parts
    phone.bye(dialed)
    assert (await phone.response("BYE")).status == 200
    await wait_for_event(client, call_id, "ended")
    rtp.close()

    async def freed() -> bool:
        return all(ref() is None for ref in alive.values())

    await wait_for(freed)


async def test_an_api_hang_up_sends_bye_and_ends_agent_hangup(
    client: TestClient, phone: SipPhone, agent_id: str
) -> None:
    _, rtp, call_id = await joined_call(client, phone, agent_id)
    response = client.post(f"/api/calls/{call_id}/send_data_message", json={"type": "hang_up"})
    assert response.status_code == 204
    bye = await phone.request("BYE")
    phone.answer(bye, 200, "OK")
    ended = await wait_for_event(client, call_id, "ended")
    rtp.close()
    assert ended["extras"]["endReason"] == "agent_hangup"


async def test_max_duration_sends_bye_and_ends_timeout(client: TestClient, phone: SipPhone) -> None:
    agent = new_agent(client, {"maxDuration": "1s"})
    _, rtp = await answered_call(phone, agent)
    bye = await phone.request("BYE")
    phone.answer(bye, 200, "OK")
    rtp.close()
    ended = await wait_for_event(client, only_call(client)["callId"], "ended")
    assert ended["extras"]["endReason"] == "timeout"


@pytest.mark.parametrize("client", [{"rtp_timeout": 1.0}], indirect=True)
async def test_no_rtp_for_the_rtp_timeout_ends_the_call_connection_error_with_a_bye(
    client: TestClient, phone: SipPhone, agent_id: str
) -> None:
    _, rtp = await answered_call(phone, agent_id)  # and then the phone sends no RTP at all
    bye = await phone.request("BYE")
    phone.answer(bye, 200, "OK")
    rtp.close()
    ended = await wait_for_event(client, only_call(client)["callId"], "ended")
    assert ended["extras"]["endReason"] == "connection_error"


async def test_a_bye_never_answered_does_not_keep_the_call_open(
    client: TestClient, phone: SipPhone, agent_id: str
) -> None:
    _, rtp, call_id = await joined_call(client, phone, agent_id)
    client.post(f"/api/calls/{call_id}/send_data_message", json={"type": "hang_up"})
    await phone.request("BYE")  # and never answered
    rtp.close()
    assert (await wait_for_event(client, call_id, "ended"))["extras"]["endReason"] == "agent_hangup"


async def test_a_bye_before_the_ack_ends_the_answered_call_hangup(
    client: TestClient, phone: SipPhone, agent_id: str
) -> None:
    dialed = phone.invite(f"agent_{agent_id}", sdp_offer("127.0.0.1", 4000))
    ok = await phone.response()
    dialed.to_tag = ok.to.tag or ""
    phone.bye(dialed)  # its ACK lost on the way, say
    assert (await phone.response("BYE")).status == 200
    ended = await wait_for_event(client, only_call(client)["callId"], "ended")
    assert ended["extras"]["endReason"] == "hangup"


@pytest.mark.parametrize("client", [{"sip_answer_delay": 5.0}], indirect=True)
async def test_a_cancel_while_ringing_gets_487_and_ends_the_call_unjoined(
    client: TestClient, phone: SipPhone, agent_id: str
) -> None:
    dialed = phone.invite(f"agent_{agent_id}", sdp_offer("127.0.0.1", 4000), branch="ringing1")
    while (await phone.response(final=False)).status != 180:
        pass
    phone.cancel(dialed, "ringing1")
    assert (await phone.response("CANCEL")).status == 200
    assert (await phone.response()).status == 487
    ended = await wait_for_event(client, only_call(client)["callId"], "ended")
    assert ended["extras"]["endReason"] == "unjoined"


async def test_a_reinvite_moves_the_media_to_the_new_address(
    client: TestClient, phone: SipPhone, agent_id: str
) -> None:
    dialed, first = await answered_call(phone, agent_id)
    await wait_for_event(client, only_call(client)["callId"], "joined")
    await echoed(first, b"\x01" * 160)  # the service's RTP now answers the first address
    moved = await RtpSession.open("127.0.0.1", PHONE_RTP)
    try:
        phone.reinvite(dialed, sdp_offer("127.0.0.1", moved.local_port))
        ok = await phone.response()
        assert ok.status == 200
        phone.ack(dialed, dialed.to_tag)
        moved.configure("127.0.0.1", parse_sdp(ok.body).media[0].port, 0, 8000, 101, 160)
        await echoed(moved, bytes(range(160)))
    finally:
        moved.close()
        first.close()


async def test_a_hold_offer_is_answered_recvonly(client: TestClient, phone: SipPhone, agent_id: str) -> None:
    dialed, rtp = await answered_call(phone, agent_id)
    hold = sdp_offer("127.0.0.1", rtp.local_port).replace(b"a=sendrecv", b"a=sendonly")
    phone.reinvite(dialed, hold)
    ok = await phone.response()
    rtp.close()
    assert ok.status == 200 and b"a=recvonly" in ok.body


# --- DTMF -------------------------------------------------------------------------------------


async def test_a_sip_info_dtmf_relay_digit_is_a_dtmf_event(
    client: TestClient, phone: SipPhone, agent_id: str
) -> None:
    dialed, rtp, call_id = await joined_call(client, phone, agent_id)
    phone.info_digit(dialed, "7")
    assert (await phone.response("INFO")).status == 200
    event = await wait_for_event(client, call_id, "dtmf")
    rtp.close()
    assert event["extras"]["digit"] == "7"


async def test_an_rfc4733_digit_is_a_dtmf_event(client: TestClient, phone: SipPhone, agent_id: str) -> None:
    _, rtp, call_id = await joined_call(client, phone, agent_id)
    assert await rtp.send_digits("5", 100, 50)
    event = await wait_for_event(client, call_id, "dtmf")
    rtp.close()
    assert event["extras"]["digit"] == "5"


async def test_play_dtmf_sounds_is_sent_as_rfc4733_events(
    client: TestClient, phone: SipPhone, agent_id: str
) -> None:
    _, rtp, call_id = await joined_call(client, phone, agent_id)
    response = client.post(
        f"/api/calls/{call_id}/send_data_message", json={"type": "play_dtmf_sounds", "digits": "9"}
    )
    assert response.status_code == 204
    async with asyncio.timeout(EVENT_WAIT_S):
        while True:
            item = await rtp.receive()
            if item is not None and not isinstance(item, RtpAudio):
                break
    rtp.close()
    assert item.digit == "9"  # type: ignore[union-attr]
    played = await wait_for_event(client, call_id, "play_dtmf")
    assert played["extras"]["method"] == "out-of-band"


# --- outgoing calls ---------------------------------------------------------------------------


def dial(client: TestClient, phone: SipPhone, **outgoing: Any) -> str:
    medium = {"sip": {"outgoing": {"to": f"sip:bob@127.0.0.1:{phone.port}", "from": "sip:agent@127.0.0.1"}}}
    medium["sip"]["outgoing"].update(outgoing)
    response = client.post("/api/calls", json={"medium": medium})
    assert response.status_code == 201, response.text
    return response.json()["callId"]


async def answer_with_pcmu(phone: SipPhone, invite: Any) -> RtpSession:
    rtp = await RtpSession.open("127.0.0.1", PHONE_RTP)
    phone.answer(invite, 180, "Ringing")
    phone.answer(invite, 200, "OK", body=sdp_offer("127.0.0.1", rtp.local_port))
    offer = parse_sdp(invite.body)
    rtp.configure("127.0.0.1", offer.media[0].port, 0, 8000, 101, 160)
    return rtp


async def test_a_dialled_call_answered_by_the_callee_is_acknowledged_and_joined(
    client: TestClient, phone: SipPhone
) -> None:
    call_id = dial(client, phone, headers={"X-Campaign": "spring"})
    invite = await phone.request("INVITE")
    assert invite.headers.get("X-Campaign") == "spring"
    rtp = await answer_with_pcmu(phone, invite)
    ack = await phone.request("ACK")
    assert ack.call_id == invite.call_id
    await wait_for_event(client, call_id, "ringing")
    joined = await wait_for_event(client, call_id, "joined")
    rtp.close()
    assert joined["extras"]["wireFormat"] == "PCMU 8000 Hz"


async def test_a_busy_callee_ends_the_call_unjoined_with_a_sip_status_event(
    client: TestClient, phone: SipPhone
) -> None:
    call_id = dial(client, phone)
    phone.answer(await phone.request("INVITE"), 486, "Busy Here")
    status = await wait_for_event(client, call_id, "sip_status")
    ended = await wait_for_event(client, call_id, "ended")
    assert status["extras"] == {"code": 486, "reason": "Busy Here"}
    assert ended["extras"]["endReason"] == "unjoined"


async def test_a_digest_challenge_is_answered_with_the_password_which_never_shows(
    client: TestClient, phone: SipPhone
) -> None:
    call_id = dial(client, phone, username="alice", password="s3cret-pw")
    first = await phone.request("INVITE")
    challenge = 'Digest realm="pbx", nonce="abc123", algorithm=MD5, qop="auth"'
    phone.answer(first, 401, "Unauthorized", headers={"WWW-Authenticate": challenge})
    second = await phone.request("INVITE")
    authorization = second.headers.get("Authorization") or ""
    assert 'username="alice"' in authorization and 'realm="pbx"' in authorization
    assert second.cseq[0] == first.cseq[0] + 1
    phone.answer(second, 603, "Decline")
    await wait_for_event(client, call_id, "ended")
    assert "s3cret-pw" not in client.get(f"/api/calls/{call_id}").text


async def test_hanging_up_a_ringing_call_cancels_its_invite(client: TestClient, phone: SipPhone) -> None:
    call_id = dial(client, phone)
    invite = await phone.request("INVITE")
    phone.answer(invite, 180, "Ringing")
    await wait_for_event(client, call_id, "ringing")
    client.post(f"/api/calls/{call_id}/send_data_message", json={"type": "hang_up"})
    cancel = await phone.request("CANCEL")
    phone.answer(cancel, 200, "OK")
    phone.answer(invite, 487, "Request Terminated")
    ended = await wait_for_event(client, call_id, "ended")
    assert ended["extras"]["endReason"] == "unjoined"


@pytest.mark.parametrize("client", [{"dial_ring_timeout": 5}], indirect=True)
async def test_a_callee_who_never_answers_is_cancelled_after_the_ring_timeout(
    client: TestClient, phone: SipPhone
) -> None:
    call_id = dial(client, phone)
    invite = await phone.request("INVITE")
    phone.answer(invite, 180, "Ringing")
    cancel = await phone.request("CANCEL")
    phone.answer(cancel, 200, "OK")
    phone.answer(invite, 487, "Request Terminated")
    status = await wait_for_event(client, call_id, "sip_status")
    assert status["extras"]["code"] == 487
    assert (await wait_for_event(client, call_id, "ended"))["extras"]["endReason"] == "unjoined"


def test_a_sip_medium_without_outgoing_cannot_be_created_through_the_api(client: TestClient) -> None:
    response = client.post("/api/calls", json={"medium": {"sip": {"incoming": {}}}})
    assert response.status_code == 400


def test_an_outgoing_sip_call_needs_a_sip_uri(client: TestClient) -> None:
    medium = {"sip": {"outgoing": {"to": "+15551234567", "from": "agent"}}}
    response = client.post("/api/calls", json={"medium": medium})
    assert response.status_code == 400 and response.json()["code"] == "invalid_sip_uri"


def test_an_outgoing_tls_call_needs_a_tls_listen(client: TestClient) -> None:
    medium = {"sip": {"outgoing": {"to": "sips:bob@127.0.0.1", "from": "agent", "tlsVerify": False}}}
    response = client.post("/api/calls", json={"medium": medium})
    assert response.status_code == 400 and "tls is not among" in response.json()["detail"]


async def test_an_answer_that_cannot_be_acknowledged_ends_the_call_and_frees_its_rtp_port(
    client: TestClient, phone: SipPhone
) -> None:
    call_id = dial(client, phone)
    invite = await phone.request("INVITE")
    # The 200's Contact names a TCP port nobody listens on: the ACK cannot be sent there.
    body = sdp_offer("127.0.0.1", 4000)
    h = invite.headers
    vias = "".join(f"Via: {v}\r\n" for v in h.get_all("Via"))
    phone.send(
        (
            f"SIP/2.0 200 OK\r\n{vias}From: {h.get('From')}\r\nTo: {h.get('To')};tag=callee\r\n"
            f"Call-ID: {invite.call_id}\r\nCSeq: {h.get('CSeq')}\r\n"
            "Contact: <sip:phone@127.0.0.1:1;transport=tcp>\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
    )
    ended = await wait_for_event(client, call_id, "ended")
    assert ended["extras"]["endReason"] == "system_error"
    ports = client.app.state.services.sip.media.ports  # type: ignore[attr-defined]
    await eventually(lambda: ports.in_use == 0)


async def test_a_call_hung_up_before_any_provisional_answer_is_cancelled_only_after_one(
    client: TestClient, phone: SipPhone
) -> None:
    call_id = dial(client, phone)
    invite = await phone.request("INVITE")
    client.post(f"/api/calls/{call_id}/send_data_message", json={"type": "hang_up"})
    await wait_for_event(client, call_id, "ended")
    following = await phone.next()  # Timer A's retransmission, not a CANCEL
    assert isinstance(following, SipRequest) and following.method == "INVITE"
    phone.answer(invite, 180, "Ringing")  # only now may a CANCEL come (RFC 3261 §9.1)
    cancel = await phone.request("CANCEL")
    assert cancel.call_id == invite.call_id
    phone.answer(cancel, 200, "OK")
    phone.answer(invite, 487, "Request Terminated")


async def test_a_second_callee_answering_a_forked_invite_is_acked_and_hung_up(
    client: TestClient, phone: SipPhone
) -> None:
    call_id = dial(client, phone)
    invite = await phone.request("INVITE")
    rtp = await answer_with_pcmu(phone, invite)
    await phone.request("ACK")
    await wait_for_event(client, call_id, "joined")
    phone.answer(invite, 200, "OK", to_tag="fork2", body=sdp_offer("127.0.0.1", 4000))
    ack = await phone.request("ACK")
    bye = await phone.request("BYE")
    phone.answer(bye, 200, "OK")
    rtp.close()
    assert ack.to.tag == "fork2" and bye.to.tag == "fork2"
    assert only_call(client)["ended"] is None  # the first callee's call goes on
