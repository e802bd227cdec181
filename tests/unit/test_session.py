"""CallSession: a failure inside one of its loops ends that call promptly with the right endReason."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from app.calls.framed_stream import FramedStream
from app.calls.join_tokens import JoinTokens
from app.calls.service import CallService
from app.calls.session import CallSession, SessionSettings
from app.calls.transport import TransportClosed
from app.events.log import CallEventLog
from app.media.formats import AudioFormat
from app.pipeline.base import AgentAudio, AgentAudioDropped, CallInfo, Pipeline, PipelineError, PipelineEvent
from app.providers.twilio import TwilioFraming
from app.schemas.calls import EndReason, StartCallRequest
from app.store.db import Database
from app.store.repositories import CallRepository, EventRepository
from tests.conftest import TWILIO_START as START
from tests.conftest import make_settings, wait_for
from tests.unit.scripted_stream import ScriptedSocket, scripted_stream

MEDIA = {"event": "media", "streamSid": "MZ1", "media": {"track": "inbound", "payload": "/////w=="}}


class FailingPipeline(Pipeline):
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def start(self, info: CallInfo, audio_format: AudioFormat) -> None:
        pass

    async def send_audio(self, audio: bytes) -> None:
        raise self.error

    async def send_dtmf(self, digit: str) -> None:
        pass

    async def events(self) -> AsyncIterator[PipelineEvent]:
        await asyncio.Event().wait()
        yield  # type: ignore[misc]

    async def close(self, reason: str | None = None) -> None:
        pass


@pytest.fixture
async def calls(tmp_path: Path) -> AsyncIterator[CallService]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    await db.migrate()
    events = CallEventLog(EventRepository(db))
    yield CallService(make_settings(tmp_path), CallRepository(db), events, JoinTokens("k"))
    await db.dispose()


@pytest.mark.parametrize(
    ("error", "end_reason"),
    [(PipelineError("agent connection dropped"), "connection_error"), (RuntimeError("bug"), "system_error")],
)
async def test_a_pipeline_failing_on_caller_audio_ends_the_call(
    calls: CallService, error: Exception, end_reason: str
) -> None:
    row, _ = await calls.create_call(StartCallRequest())
    session = CallSession(
        row, scripted_stream([START, MEDIA]), FailingPipeline(error), calls, SessionSettings()
    )
    await asyncio.wait_for(session.run(), 5)  # not left open until maxDuration (1 h)
    ended = await calls.calls.get(row.id)
    assert ended is not None and ended.end_reason == end_reason


class RunawayAgent(FailingPipeline):
    """Sends a minute of audio at once, far ahead of real time."""

    def __init__(self) -> None:
        super().__init__(RuntimeError("unused"))

    async def send_audio(self, audio: bytes) -> None:
        pass

    async def events(self) -> AsyncIterator[PipelineEvent]:
        for _ in range(3000):  # 3000 x 20 ms
            yield AgentAudio(b"\xff" * 160)
        await asyncio.Event().wait()


async def test_an_agent_far_ahead_of_real_time_has_its_excess_audio_dropped_with_one_warning(
    calls: CallService,
) -> None:
    row, _ = await calls.create_call(StartCallRequest())
    stream = scripted_stream([START])
    session = CallSession(row, stream, RunawayAgent(), calls, SessionSettings(max_queued_agent_audio_ms=1000))
    task = asyncio.create_task(session.run())

    async def warned() -> list:
        await calls.events.flush()
        page = await EventRepository(calls.calls.db).page(row.id, ["warning"], None, 100)
        return [e for e in page.rows if e.type == "pipeline_error"]

    warnings = await wait_for(warned, within=5)
    media = session.media  # the ended session lets go of it
    session.finish(EndReason.HANGUP, "test over")
    await asyncio.wait_for(task, 5)
    assert len(await warned()) == 1 and "faster than real time" in warnings[0].text
    assert media is not None and media.playout.queued_ms <= 1000


class BackloggedAgent(RunawayAgent):
    """Its own event queue overflowed before the call could take the audio."""

    async def events(self) -> AsyncIterator[PipelineEvent]:
        yield AgentAudioDropped(1600)  # 200 ms of μ-law
        await asyncio.Event().wait()


async def test_audio_an_agent_link_dropped_is_recorded_as_a_pipeline_warning(calls: CallService) -> None:
    row, _ = await calls.create_call(StartCallRequest())
    session = CallSession(row, scripted_stream([START]), BackloggedAgent(), calls, SessionSettings())
    task = asyncio.create_task(session.run())

    async def warned() -> list:
        await calls.events.flush()
        page = await EventRepository(calls.calls.db).page(row.id, ["warning"], None, 100)
        return [e.extras for e in page.rows if e.type == "pipeline_error"]

    assert await wait_for(warned, within=5) == [{"droppedMs": 200}]
    session.finish(EndReason.HANGUP, "test over")
    await asyncio.wait_for(task, 5)


class SlowStartingAgent(RunawayAgent):
    """Its start waits until the test lets it go; then it stays quiet."""

    def __init__(self) -> None:
        super().__init__()
        self.starting = asyncio.Event()
        self.go = asyncio.Event()

    async def start(self, info: CallInfo, audio_format: AudioFormat) -> None:
        self.starting.set()
        await self.go.wait()

    async def events(self) -> AsyncIterator[PipelineEvent]:
        await asyncio.Event().wait()
        yield  # type: ignore[misc]


async def ended_reason(calls: CallService, call_id: str) -> str | None:
    row = await calls.calls.get(call_id)
    return row.end_reason if row else None


async def test_a_hang_up_while_the_agent_is_still_connecting_ends_the_call_at_once(
    calls: CallService,
) -> None:
    row, _ = await calls.create_call(StartCallRequest())
    agent = SlowStartingAgent()
    session = CallSession(row, scripted_stream([START]), agent, calls, SessionSettings())
    task = asyncio.create_task(session.run())
    await asyncio.wait_for(agent.starting.wait(), 5)
    session.hang_up("hung up through the API")  # the agent never finishes connecting
    await asyncio.wait_for(task, 5)
    assert await ended_reason(calls, row.id) == "agent_hangup"


async def test_a_session_waiting_for_its_stream_to_start_stops_when_the_call_is_ended(
    calls: CallService,
) -> None:
    row, _ = await calls.create_call(StartCallRequest())
    session = CallSession(row, scripted_stream([]), SlowStartingAgent(), calls, SessionSettings())
    task = asyncio.create_task(session.run())
    session.finish(EndReason.UNJOINED, "hung up before the call was joined")
    await asyncio.wait_for(task, 5)  # not left waiting until the join deadline (30 s)
    assert task.done() and not task.cancelled()


async def test_a_cancelled_session_still_ends_its_call(calls: CallService) -> None:
    row, _ = await calls.create_call(StartCallRequest())
    agent = SlowStartingAgent()
    agent.go.set()
    session = CallSession(row, scripted_stream([START]), agent, calls, SessionSettings())
    task = asyncio.create_task(session.run())

    async def joined() -> bool:
        return session.joined

    await wait_for(joined, within=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await ended_reason(calls, row.id) == "system_error"


class SteadyRunawayAgent(RunawayAgent):
    """Sends 40 ms of audio every 10 ms (4x real time) for a second, then stays quiet."""

    def __init__(self) -> None:
        super().__init__()
        self.done = asyncio.Event()

    async def events(self) -> AsyncIterator[PipelineEvent]:
        for _ in range(100):
            yield AgentAudio(b"\xff" * 320)
            await asyncio.sleep(0.01)
        self.done.set()
        await asyncio.Event().wait()


async def test_an_agent_steadily_ahead_of_real_time_is_warned_about_once_not_per_frame(
    calls: CallService,
) -> None:
    row, _ = await calls.create_call(StartCallRequest())
    agent = SteadyRunawayAgent()
    session = CallSession(
        row, scripted_stream([START]), agent, calls, SessionSettings(max_queued_agent_audio_ms=200)
    )
    task = asyncio.create_task(session.run())
    await asyncio.wait_for(agent.done.wait(), 10)
    session.finish(EndReason.HANGUP, "test over")
    await asyncio.wait_for(task, 5)
    await calls.events.flush()
    page = await EventRepository(calls.calls.db).page(row.id, ["warning"], None, 100)
    assert [e.type for e in page.rows] == ["pipeline_error"]


class StopThenCloseSocket(ScriptedSocket):
    """A far end that sends `stop` and closes at once: the close reaches callbridge's first send before its
    receive loop has taken the `stop`."""

    def __init__(self) -> None:
        super().__init__([START])
        self._stop_sent = asyncio.Event()

    async def receive(self) -> str:
        if self._messages:
            return self._messages.pop(0)
        await self._stop_sent.wait()
        self._messages, self._stop_sent = [], asyncio.Event()  # what follows the stop is the close
        return orjson.dumps({"event": "stop", "streamSid": "MZ1", "stop": {"callSid": "CA1"}}).decode()

    async def send(self, message: str | bytes) -> None:
        self._stop_sent.set()
        raise TransportClosed("closed with code 1000")


async def test_a_stop_just_before_the_close_gives_the_end_its_reason_though_a_send_saw_the_close_first(
    calls: CallService,
) -> None:
    row, _ = await calls.create_call(StartCallRequest())
    stream = FramedStream(StopThenCloseSocket(), TwilioFraming())
    session = CallSession(row, stream, RunawayAgent(), calls, SessionSettings())
    await asyncio.wait_for(session.run(), 5)
    page = await EventRepository(calls.calls.db).page(row.id, ["info"], None, 100)
    ended = [e for e in page.rows if e.type == "ended"]
    assert [e.extras["endReason"] for e in ended] == ["hangup"]
    assert ended[0].text.startswith("the provider ended the stream")
