"""CallSession over a transport that hands events over as they arrive (the direct WebSocket path): caller
audio reaches the agent, and the echo reaches the caller, without the session's tasks taking it; everything
else still comes through `receive`, in order."""

from __future__ import annotations

import asyncio
import base64
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.calls.framed_stream import FramedStream
from app.calls.join_tokens import JoinTokens
from app.calls.service import CallService
from app.calls.session import CallSession, SessionSettings
from app.events.log import CallEventLog
from app.pipeline.echo import EchoOptions, EchoPipeline
from app.providers.twilio import TwilioFraming
from app.schemas.calls import EndReason, StartCallRequest
from app.store.db import Database
from app.store.repositories import CallRepository, EventRepository
from app.store.tables import CallRow
from tests.conftest import TWILIO_START as START
from tests.conftest import make_settings, wait_for
from tests.unit.scripted_stream import HandingSocket
from tests.unit.test_session import FailingPipeline

FRAME = bytes(range(160))  # 20 ms of μ-law


def media(payload: bytes) -> dict:
    return {
        "event": "media",
        "streamSid": "MZ1",
        "media": {"track": "inbound", "payload": base64.b64encode(payload).decode()},
    }


@pytest.fixture
async def calls(tmp_path: Path) -> AsyncIterator[CallService]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    await db.migrate()
    yield CallService(
        make_settings(tmp_path), CallRepository(db), CallEventLog(EventRepository(db)), JoinTokens("k")
    )
    await db.dispose()


async def joined_session(
    calls: CallService, socket: HandingSocket, pipeline: object
) -> tuple[CallRow, CallSession, asyncio.Task[None]]:
    row, _ = await calls.create_call(StartCallRequest())
    session = CallSession(row, FramedStream(socket, TwilioFraming()), pipeline, calls, SessionSettings())  # type: ignore[arg-type]
    running = asyncio.create_task(session.run())
    socket.deliver(START)

    async def taking_messages_now() -> bool:
        return session.joined and socket.idle

    await wait_for(taking_messages_now)
    return row, session, running


async def test_caller_audio_is_echoed_to_the_caller_without_passing_through_receive(
    calls: CallService,
) -> None:
    socket = HandingSocket()
    _, _, running = await joined_session(calls, socket, EchoPipeline(EchoOptions()))
    taken_before = socket.received
    frames = [bytes([i]) * 160 for i in range(10)]
    for frame in frames:
        socket.deliver(media(frame))

    async def echoed() -> bool:
        return len(socket.audio()) >= len(frames) * 160

    await wait_for(echoed)
    assert socket.audio()[: len(frames) * 160] == b"".join(frames)
    assert socket.received == taken_before  # not one frame woke the session's task
    running.cancel()


async def test_a_stop_after_handed_over_audio_still_ends_the_call_through_receive(calls: CallService) -> None:
    socket = HandingSocket()
    row, _, running = await joined_session(calls, socket, EchoPipeline(EchoOptions()))
    socket.deliver(media(FRAME))
    socket.deliver({"event": "stop", "streamSid": "MZ1"})
    await asyncio.wait_for(running, 5)
    ended = await calls.calls.get(row.id)
    assert ended is not None and ended.end_reason == EndReason.HANGUP


class FailingNowPipeline(FailingPipeline):
    """An agent whose synchronous audio path raises."""

    def send_audio_now(self, audio: bytes) -> None:  # type: ignore[override]
        raise self.error


async def test_an_agent_failing_on_handed_over_audio_ends_the_call_as_system_error(
    calls: CallService,
) -> None:
    socket = HandingSocket()
    row, _, running = await joined_session(calls, socket, FailingNowPipeline(RuntimeError("bug")))
    socket.deliver(media(FRAME))  # the failure is not raised here, in the socket's callback
    await asyncio.wait_for(running, 5)
    ended = await calls.calls.get(row.id)
    assert ended is not None and ended.end_reason == EndReason.SYSTEM_ERROR


async def test_an_ended_call_is_freed_by_reference_counting_alone(
    calls: CallService, no_cycle_collector: None
) -> None:
    # What a call leaves in a reference cycle only the collector's full pass finds, and that pass pauses
    # every live call while it walks every object (206 ms in a 10-minute soak before this held).
    socket = HandingSocket()
    pipeline = EchoPipeline(EchoOptions())
    _, session, running = await joined_session(calls, socket, pipeline)
    socket.deliver(media(FRAME))

    async def echoed() -> bool:
        return len(socket.audio()) >= len(FRAME)

    await wait_for(echoed)
    assert session.media is not None
    parts = {
        "session": session,
        "transport": session.transport,
        "agent": pipeline,
        "media": session.media,
        "playout": session.media.playout,
    }
    alive = {name: weakref.ref(part) for name, part in parts.items()}
    socket.deliver({"event": "stop", "streamSid": "MZ1"})
    await running
    del session, pipeline, parts, running

    assert [name for name, ref in alive.items() if ref() is not None] == []
