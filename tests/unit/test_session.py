"""CallSession: a failure inside one of its loops ends that call promptly with the right endReason."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from app.calls.join_tokens import JoinTokens
from app.calls.service import CallService
from app.calls.session import CallSession, SessionSettings
from app.calls.transport import TransportClosed
from app.events.log import CallEventLog
from app.media.formats import AudioFormat
from app.pipeline.base import CallInfo, Pipeline, PipelineError, PipelineEvent
from app.providers.twilio import TwilioFraming
from app.schemas.calls import StartCallRequest
from app.store.db import Database
from app.store.repositories import CallRepository, EventRepository
from tests.conftest import TWILIO_START as START
from tests.conftest import make_settings

MEDIA = {"event": "media", "streamSid": "MZ1", "media": {"track": "inbound", "payload": "/////w=="}}


class ScriptedTransport:
    """Plays a fixed list of provider messages, then stays open until closed."""

    def __init__(self, messages: list[dict]) -> None:
        self.framing = TwilioFraming()
        self._messages = [orjson.dumps(m).decode() for m in messages]
        self._closed = asyncio.Event()

    async def receive(self) -> str:
        if self._messages:
            return self._messages.pop(0)
        await self._closed.wait()
        raise TransportClosed("closed")

    async def send(self, message: str) -> None:
        pass

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._closed.set()


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
        row, ScriptedTransport([START, MEDIA]), FailingPipeline(error), calls, SessionSettings()
    )
    await asyncio.wait_for(session.run(), 5)  # not left open until maxDuration (1 h)
    ended = await calls.calls.get(row.id)
    assert ended is not None and ended.end_reason == end_reason
