"""`GET /api/calls/{callId}/sip_logs`: a call's SIP messages in order, credentials redacted, paged."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.api.sip_phone import SipPhone
from tests.api.test_sip_calls import (
    answer_with_pcmu,
    dial,
    eventually,
    joined_call,
    new_agent,
    server_of,
    sip_client,
    wait_for_event,
)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    yield from sip_client(tmp_path)


@pytest.fixture
async def phone(client: TestClient) -> AsyncIterator[SipPhone]:
    phone = await SipPhone("127.0.0.1", server_of(client)).open()
    yield phone
    phone.close()


def sip_logs(client: TestClient, call_id: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/api/calls/{call_id}/sip_logs", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def start_lines(client: TestClient, call_id: str) -> list[tuple[str, str]]:
    """(direction, the method or status) of each message logged, retransmissions and all."""
    lines = []
    for entry in sip_logs(client, call_id, pageSize=200)["results"]:
        first = entry["message"].split("\r\n", 1)[0].split(" ")
        lines.append((entry["direction"], first[1] if first[0] == "SIP/2.0" else first[0]))
    return lines


def logged(client: TestClient, call_id: str, wanted: tuple[str, str]) -> bool:
    return wanted in start_lines(client, call_id)


async def test_an_incoming_calls_logs_begin_with_its_invite_and_follow_it_to_the_bye(
    client: TestClient, phone: SipPhone
) -> None:
    dialed, rtp, call_id = await joined_call(client, phone, new_agent(client, {}))
    phone.bye(dialed)
    await phone.response("BYE")
    rtp.close()
    await eventually(lambda: logged(client, call_id, ("in", "BYE")))
    lines = start_lines(client, call_id)
    assert lines[:5] == [("in", "INVITE"), ("out", "100"), ("out", "180"), ("out", "200"), ("in", "ACK")]
    assert lines[lines.index(("in", "BYE")) + 1] == ("out", "200")


async def test_each_entry_says_when_and_which_peer(client: TestClient, phone: SipPhone) -> None:
    _, rtp, call_id = await joined_call(client, phone, new_agent(client, {}))
    rtp.close()
    entry = sip_logs(client, call_id)["results"][0]
    assert entry["peer"] == f"udp:127.0.0.1:{phone.port}" and entry["timestamp"].startswith("20")
    assert entry["message"].startswith("INVITE sip:agent_")


async def test_an_outgoing_calls_logs_begin_with_the_invite_sent(client: TestClient, phone: SipPhone) -> None:
    call_id = dial(client, phone)
    rtp = await answer_with_pcmu(phone, await phone.request("INVITE"))
    await phone.request("ACK")
    rtp.close()
    await eventually(lambda: logged(client, call_id, ("out", "ACK")))
    assert start_lines(client, call_id)[:4] == [
        ("out", "INVITE"),
        ("in", "180"),
        ("in", "200"),
        ("out", "ACK"),
    ]


async def test_digest_credentials_are_redacted_and_the_password_never_appears(
    client: TestClient, phone: SipPhone
) -> None:
    call_id = dial(client, phone, username="alice", password="s3cret-pw")
    challenge = 'Digest realm="pbx", nonce="abc123", algorithm=MD5, qop="auth"'
    phone.answer(await phone.request("INVITE"), 401, "Unauthorized", headers={"WWW-Authenticate": challenge})
    second = await phone.request("INVITE")
    proof = (second.headers.get("Authorization") or "").split('response="')[1].split('"')[0]
    phone.answer(second, 603, "Decline")
    await wait_for_event(client, call_id, "ended")
    await eventually(lambda: logged(client, call_id, ("in", "603")))
    messages = [entry["message"] for entry in sip_logs(client, call_id)["results"]]
    [authorization] = [line for m in messages for line in m.split("\r\n") if line.startswith("Authorization")]
    assert 'response="[redacted]"' in authorization
    assert 'username="alice"' in authorization and 'nonce="abc123"' in authorization
    assert not any(proof in m or "s3cret-pw" in m for m in messages)


async def test_sip_logs_are_paged_in_order(client: TestClient, phone: SipPhone) -> None:
    _, rtp, call_id = await joined_call(client, phone, new_agent(client, {}))
    rtp.close()
    everything = sip_logs(client, call_id)["results"]
    first = sip_logs(client, call_id, pageSize=2)
    second = client.get(first["next"]).json()
    assert first["total"] == len(everything) >= 4
    assert first["results"] + second["results"][:2] == everything[:4]


def test_an_unknown_call_has_no_sip_logs(client: TestClient) -> None:
    response = client.get("/api/calls/no-such-call/sip_logs")
    assert response.status_code == 404 and response.json()["code"] == "call_not_found"


def test_a_call_not_over_sip_has_an_empty_sip_log(client: TestClient) -> None:
    created = client.post("/api/calls", json={"medium": {"serverWebSocket": {"inputSampleRate": 8000}}})
    logs = sip_logs(client, created.json()["callId"])
    assert logs["results"] == [] and logs["total"] == 0
