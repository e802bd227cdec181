"""CallSession: the agent's call-control actions (transfer, DTMF) and how they reach the provider leg."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from app.calls.join_tokens import JoinTokens
from app.calls.service import CallService
from app.calls.session import CallSession, SessionSettings
from app.events.log import CallEventLog
from app.media.codecs import decode_to_pcm16
from app.media.formats import PCMU_8K, AudioFormat
from app.pipeline.base import CallInfo, ColdTransfer, Pipeline, PipelineEvent, PlayDtmf
from app.schemas.calls import EndReason, StartCallRequest
from app.store.db import Database
from app.store.repositories import CallRepository, EventRepository
from tests.conftest import TWILIO_START as START
from tests.conftest import make_settings, wait_for
from tests.goertzel import detect_dtmf
from tests.unit.scripted_stream import ScriptedSocket, scripted_stream


class ActingAgent(Pipeline):
    """Takes one action once the call starts, then stays quiet."""

    def __init__(self, action: PipelineEvent) -> None:
        self.action = action

    async def start(self, info: CallInfo, audio_format: AudioFormat) -> None:
        pass

    async def send_audio(self, audio: bytes) -> None:
        pass

    async def send_dtmf(self, digit: str) -> None:
        pass

    async def events(self) -> AsyncIterator[PipelineEvent]:
        yield self.action
        await asyncio.Event().wait()

    async def close(self, reason: str | None = None) -> None:
        pass


class FakeLegs:
    """The provider leg's REST side: records requests, succeeds or fails as told."""

    def __init__(self, transfer_problem: str | None = None, out_of_band: bool = False) -> None:
        self.transfer_problem = transfer_problem
        self.out_of_band = out_of_band
        self.transfers: list[str] = []
        self.options: list[dict[str, Any]] = []
        self.dtmf: list[str] = []

    async def transfer(self, call_id: str, target: str, **options: Any) -> str | None:
        self.transfers.append(target)
        self.options.append(options)
        return self.transfer_problem

    async def send_dtmf(self, call_id: str, digits: str, tone_ms: int) -> tuple[bool, str | None]:
        if self.out_of_band:
            self.dtmf.append(digits)
        return self.out_of_band, None


@pytest.fixture
async def calls(tmp_path: Path) -> AsyncIterator[CallService]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    await db.migrate()
    events = CallEventLog(EventRepository(db))
    yield CallService(make_settings(tmp_path), CallRepository(db), events, JoinTokens("k"))
    await db.dispose()


async def run_until(session: CallSession, done: Callable[[], Awaitable[object]]) -> None:
    """Run the call until `done()` is truthy, then hang it up from the provider's side."""
    task = asyncio.create_task(session.run())
    try:
        await wait_for(done, within=5)
    finally:
        session.finish(EndReason.HANGUP, "test over")
        await asyncio.wait_for(task, 5)


def socket_of(session: CallSession) -> ScriptedSocket:
    socket = session.transport.socket  # type: ignore[attr-defined]
    assert isinstance(socket, ScriptedSocket)
    return socket


async def events_of(calls: CallService, call_id: str, type: str) -> list[dict]:
    await calls.events.flush()
    page = await EventRepository(calls.calls.db).page(
        call_id, ["debug", "info", "warning", "error"], None, 100
    )
    return [{"text": e.text, **e.extras} for e in page.rows if e.type == type]


async def test_an_agents_transfer_reaches_the_provider_and_the_agent_leaves(
    calls: CallService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.calls.actions.TRANSFER_GRACE_S", 0.2)  # the provider never stops this stream
    row, _ = await calls.create_call(StartCallRequest())
    legs = FakeLegs()
    session = CallSession(
        row,
        scripted_stream([START]),
        ActingAgent(ColdTransfer("+15557654321")),
        calls,
        SessionSettings(),
        legs,
    )
    await asyncio.wait_for(session.run(), 5)
    assert legs.transfers == ["+15557654321"]
    ended = await calls.calls.get(row.id)
    assert ended is not None and ended.end_reason == "agent_hangup"
    outcomes = [e.get("outcome") for e in await events_of(calls, row.id, "transfer")]
    assert outcomes == [None, "transferred"]


async def test_the_stream_stopping_after_a_transfer_ends_the_call_as_transferred(calls: CallService) -> None:
    row, _ = await calls.create_call(StartCallRequest())
    stream = scripted_stream([START])
    session = CallSession(
        row, stream, ActingAgent(ColdTransfer("+15557654321")), calls, SessionSettings(), FakeLegs()
    )
    task = asyncio.create_task(session.run())

    async def transferred() -> bool:
        return any(e.get("outcome") == "transferred" for e in await events_of(calls, row.id, "transfer"))

    await wait_for(transferred, within=5)
    await stream.close()  # the provider ends the stream to run the transfer
    await asyncio.wait_for(task, 2)
    ended = await calls.calls.get(row.id)
    assert ended is not None and ended.end_reason == "agent_hangup"


async def test_an_agents_transfer_with_an_unknown_sip_verb_is_refused_before_the_leg_hears_of_it(
    calls: CallService,
) -> None:
    row, _ = await calls.create_call(StartCallRequest())
    legs = FakeLegs()
    transfer = ColdTransfer("sip:desk@pbx.example.com", sip_verb="BYE")
    session = CallSession(
        row, scripted_stream([START]), ActingAgent(transfer), calls, SessionSettings(), legs
    )

    async def failed() -> list[dict]:
        return [e for e in await events_of(calls, row.id, "transfer") if e.get("outcome") == "failed"]

    await run_until(session, failed)
    assert legs.transfers == [] and "sipVerb 'BYE'" in (await failed())[-1]["text"]


async def test_an_agents_transfer_options_reach_the_leg(
    calls: CallService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.calls.actions.TRANSFER_GRACE_S", 0.2)
    row, _ = await calls.create_call(StartCallRequest())
    legs = FakeLegs()
    transfer = ColdTransfer("sip:desk@pbx.example.com", "INVITE", {"X-Note": "vip"}, True)
    session = CallSession(
        row, scripted_stream([START]), ActingAgent(transfer), calls, SessionSettings(), legs
    )
    await asyncio.wait_for(session.run(), 5)
    assert legs.options == [
        {"sip_verb": "INVITE", "extra_headers": {"X-Note": "vip"}, "fallback_to_bridge": True}
    ]


async def test_a_transfer_the_provider_refuses_keeps_the_caller_with_the_agent(calls: CallService) -> None:
    row, _ = await calls.create_call(StartCallRequest())
    legs = FakeLegs(transfer_problem="twilio transfer failed (HTTP 400): not in progress")
    session = CallSession(
        row,
        scripted_stream([START]),
        ActingAgent(ColdTransfer("+15557654321")),
        calls,
        SessionSettings(),
        legs,
    )

    async def failed() -> list[dict]:
        return [e for e in await events_of(calls, row.id, "transfer") if e.get("outcome") == "failed"]

    await run_until(session, failed)
    ended = await calls.calls.get(row.id)
    assert ended is not None and ended.end_reason == "hangup"  # the caller, not the transfer, ended it
    assert "not in progress" in (await failed())[-1]["text"]


async def test_a_transfer_to_something_not_a_number_or_sip_uri_is_refused(calls: CallService) -> None:
    row, _ = await calls.create_call(StartCallRequest())
    legs = FakeLegs()
    session = CallSession(
        row,
        scripted_stream([START]),
        ActingAgent(ColdTransfer("the front desk")),
        calls,
        SessionSettings(),
        legs,
    )
    await run_until(session, lambda: events_of(calls, row.id, "transfer"))
    assert legs.transfers == []
    assert (await events_of(calls, row.id, "transfer"))[-1]["outcome"] == "failed"


async def test_dtmf_without_a_provider_api_is_played_as_tones_on_the_stream(calls: CallService) -> None:
    row, _ = await calls.create_call(StartCallRequest())
    session = CallSession(
        row, scripted_stream([START]), ActingAgent(PlayDtmf("12#")), calls, SessionSettings(), FakeLegs()
    )

    async def all_tones_sent() -> bool:  # 3 x 300 ms of tones, paced in real time
        return len(socket_of(session).audio()) >= 3 * 300 * 8

    await run_until(session, all_tones_sent)
    assert detect_dtmf(decode_to_pcm16(socket_of(session).audio(), PCMU_8K), 8000) == "12#"
    assert (await events_of(calls, row.id, "play_dtmf"))[-1]["method"] == "in-band"


async def test_dtmf_goes_through_the_provider_api_when_it_has_one(calls: CallService) -> None:
    row, _ = await calls.create_call(StartCallRequest())
    legs = FakeLegs(out_of_band=True)
    session = CallSession(
        row, scripted_stream([START]), ActingAgent(PlayDtmf("12#")), calls, SessionSettings(), legs
    )
    await run_until(session, lambda: events_of(calls, row.id, "play_dtmf"))
    assert legs.dtmf == ["12#"] and socket_of(session).audio() == b""
    assert (await events_of(calls, row.id, "play_dtmf"))[-1]["method"] == "out-of-band"


async def test_dtmf_that_is_not_digits_is_refused_with_an_event(calls: CallService) -> None:
    row, _ = await calls.create_call(StartCallRequest())
    legs = FakeLegs(out_of_band=True)
    session = CallSession(
        row, scripted_stream([START]), ActingAgent(PlayDtmf("1x")), calls, SessionSettings(), legs
    )
    await run_until(session, lambda: events_of(calls, row.id, "play_dtmf"))
    assert legs.dtmf == [] and "not a DTMF digit" in (await events_of(calls, row.id, "play_dtmf"))[-1]["text"]
