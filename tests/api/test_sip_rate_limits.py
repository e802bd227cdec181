"""Per-source rate limits on new out-of-dialog SIP requests, against the service in-process: a flood from
one address is refused before anything is allocated, and never stops another address's calls."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from app.sip.message import SipResponse
from tests.api.sip_phone import SipPhone, sdp_offer
from tests.api.test_sip_calls import new_agent, server_of, sip_client

#: Three INVITEs at once, then (practically) none: the refill is too slow to matter within a test.
BURST = 3
LIMITS = {
    "sip_invite_rate": 0.001,
    "sip_invite_burst": BURST,
    "sip_request_rate": 0.001,
    "sip_request_burst": BURST,
}
FLOOD = 10
#: 127.0.0.2 stays outside the allowed ranges (a scanner); 127.0.0.3 is a second allowed PBX.
ALLOWED = ["127.0.0.1/32", "127.0.0.3/32"]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    for client in sip_client(tmp_path, **LIMITS):
        assert client.patch("/api/sip", json={"allowedCidrRanges": ALLOWED}).status_code == 200
        yield client


@pytest.fixture
async def phone(client: TestClient) -> AsyncIterator[SipPhone]:
    phone = await SipPhone("127.0.0.1", server_of(client)).open()
    yield phone
    phone.close()


def options(phone: SipPhone, call_id: str, branch: str | None = None) -> None:
    phone.send(
        f"OPTIONS sip:{phone.server[0]}:{phone.server[1]} SIP/2.0\r\n{phone.via(branch)}"
        f"From: <sip:probe@{phone.host}>;tag=p1\r\nTo: <sip:{phone.server[0]}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )


async def final_responses_until_marker(phone: SipPhone) -> list[SipResponse]:
    """The final INVITE responses (one per call, retransmissions left out) that came before the answer to a
    `marker` OPTIONS: UDP on loopback keeps the order the service sent them in, and it answers requests in
    the order they came."""
    options(phone, "marker")
    finals: dict[str, SipResponse] = {}
    while True:
        message = await phone.next()
        if not isinstance(message, SipResponse) or message.status < 200:
            continue
        if message.call_id == "marker":
            return list(finals.values())
        finals.setdefault(message.call_id, message)


def flood(phone: SipPhone, count: int = FLOOD) -> None:
    for _ in range(count):
        phone.invite("nobody", sdp_offer(phone.host, 4000))


async def test_invites_over_the_burst_from_an_allowed_source_get_503_with_retry_after(
    client: TestClient, phone: SipPhone
) -> None:
    flood(phone)
    statuses = [response.status for response in await final_responses_until_marker(phone)]
    assert statuses == [404] * BURST + [503] * (FLOOD - BURST)


async def test_the_503_says_when_to_try_again(client: TestClient, phone: SipPhone) -> None:
    flood(phone, BURST + 1)
    refused = (await final_responses_until_marker(phone))[-1]
    assert refused.status == 503 and int(refused.headers.get("Retry-After") or 0) >= 1


async def test_a_flood_from_a_source_not_allowed_is_dropped_after_its_burst_of_403s(
    client: TestClient,
) -> None:
    scanner = await SipPhone("127.0.0.2", server_of(client)).open()
    try:
        flood(scanner)
        statuses = [response.status for response in await final_responses_until_marker(scanner)]
    finally:
        scanner.close()
    assert statuses == [403] * BURST


async def test_a_flood_from_one_source_never_stops_another_sources_call(
    client: TestClient, phone: SipPhone
) -> None:
    agent = new_agent(client, {})
    flood(phone)
    assert (await final_responses_until_marker(phone))[-1].status == 503
    other = await SipPhone("127.0.0.3", server_of(client)).open()
    try:
        other.invite(f"agent_{agent}", sdp_offer("127.0.0.3", 4000))
        assert (await other.response()).status == 200
    finally:
        other.close()


async def test_retransmissions_of_an_invite_are_not_counted(client: TestClient, phone: SipPhone) -> None:
    for _ in range(FLOOD):  # one INVITE, sent again and again with its branch: one transaction
        phone.invite("nobody", sdp_offer("127.0.0.1", 4000), branch="same")
    statuses = {response.status for response in await final_responses_until_marker(phone)}
    assert statuses == {404}


async def test_options_over_the_burst_get_503(client: TestClient, phone: SipPhone) -> None:
    for n in range(BURST + 1):
        options(phone, f"probe-{n}")
    statuses = [(await phone.response("OPTIONS")).status for _ in range(BURST + 1)]
    assert statuses == [200] * BURST + [503]
