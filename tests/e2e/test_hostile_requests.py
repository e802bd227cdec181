"""Hostile HTTP against a real `callbridge serve`: refused at once (or after the body's read timeout), while
the server stays healthy and a live call alongside is untouched."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from app.simulator.audio import speech_like
from app.simulator.carrier import CallReport
from app.simulator.twilio import CallScript, FakeTwilio
from tests.conftest import (
    API_KEY,
    TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
    TWILIO_CONFIG,
    RunningServer,
    ended,
    import_config,
    run_server,
    wait_for,
)

pytestmark = pytest.mark.e2e

#: A body read timeout short enough for a slow sender to run into it within the test.
READ_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with run_server(
        tmp_path_factory.mktemp("hostile"), CALLBRIDGE_BODY_READ_TIMEOUT=str(READ_TIMEOUT_S)
    ) as running:
        yield running


@pytest.fixture
async def live_call(hostile_server: RunningServer) -> AsyncIterator[asyncio.Task[CallReport]]:
    """A simulated Twilio call, joined and talking for the length of the test."""
    await import_config(hostile_server, "twilio", TWILIO_CONFIG)
    async with hostile_server.api() as api:
        agent = (await api.post("/api/agents", json={"name": "h", "callTemplate": {}})).json()["agentId"]
    twilio = FakeTwilio(hostile_server.base_url, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)
    call = asyncio.create_task(twilio.call(agent, CallScript(audio=speech_like(4.0), tail_seconds=1.0)))

    async def joined() -> bool:
        async with hostile_server.api() as api:
            page = (await api.get(f"/api/calls?agentId={agent}")).json()["results"]
        return bool(page and page[0]["joined"])

    await wait_for(joined)
    yield call
    call.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await call


async def slow_post(
    server: RunningServer, path: str, declared: int, headers: dict[str, str] | None = None
) -> tuple[int, float]:
    """POST declaring `declared` body bytes and sending one every 0.1 s; (status, seconds to the answer)."""
    parts = urlsplit(server.base_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {declared}"]
    head += [f"{name}: {value}" for name, value in (headers or {}).items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    started = time.monotonic()

    async def trickle() -> None:
        with contextlib.suppress(OSError):
            while True:
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.1)

    sender = asyncio.create_task(trickle())
    try:
        status_line = await asyncio.wait_for(reader.readline(), timeout=READ_TIMEOUT_S + 10)
        elapsed = time.monotonic() - started
        # The server closes the connection after a refusal: reading to the end returns (or is reset, the
        # server closing with the sender's bytes unread).
        with contextlib.suppress(ConnectionResetError):
            await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        sender.cancel()
        writer.close()
    return int(status_line.split()[1]), elapsed


async def assert_untouched(server: RunningServer, live_call: asyncio.Task[CallReport]) -> None:
    """The server is healthy, and the live call ran to its end as if nothing had happened."""
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        assert (await client.get("/healthz")).status_code == 200
    report = await live_call
    # Every mark but the last comes back: the carrier may hang up before the audio the last one follows plays.
    assert report.ended_by == "carrier", report.summary()
    assert report.marks_returned >= report.marks_received - 1, report.summary()
    assert report.media_received >= 0.95 * report.frames_sent, report.summary()
    # The echo comes back (a playout gap under load costs some correlation, a broken call all of it).
    assert report.round_trip is not None and report.round_trip.correlation >= 0.7, report.summary()
    assert (await ended(server, report.call_id or ""))["endReason"] == "hangup"


async def test_a_huge_declared_webhook_body_sent_slowly_is_413_at_once_and_a_live_call_goes_on(
    hostile_server: RunningServer, live_call: asyncio.Task[CallReport]
) -> None:
    status, elapsed = await slow_post(
        hostile_server, "/api/agents/nobody/telephony_xml", 10**9, {"X-Twilio-Signature": "x"}
    )
    print(f"\n413 after {elapsed * 1000:.0f} ms")
    assert status == 413
    await assert_untouched(hostile_server, live_call)


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/api/agents/nobody/telephony_xml", {"X-Twilio-Signature": "x"}),
        ("/api/agents", {"X-API-Key": API_KEY, "Content-Type": "application/json"}),
    ],
    ids=["webhook", "api"],
)
async def test_a_body_that_trickles_is_408_after_the_read_timeout_and_a_live_call_goes_on(
    hostile_server: RunningServer, live_call: asyncio.Task[CallReport], path: str, headers: dict[str, str]
) -> None:
    status, elapsed = await slow_post(hostile_server, path, 1000, headers)
    print(f"\n408 after {elapsed * 1000:.0f} ms (read timeout {READ_TIMEOUT_S:g}s)")
    assert status == 408
    await assert_untouched(hostile_server, live_call)


def test_nothing_was_logged_as_an_error(hostile_server: RunningServer) -> None:
    assert " ERROR " not in hostile_server.log(), hostile_server.log()
