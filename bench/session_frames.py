"""The call session's own cost per caller frame: a real CallSession between an in-memory stream and an agent.

Twilio `media` messages (μ-law 8 kHz) go through `FramedStream.receive` (the framing's decode), the
session's event dispatch and `CallMedia` (no conversion: the agent takes μ-law) to a pipeline that drops
the audio. This is what the call core adds per 20 ms frame on top of the WebSocket server's own I/O (which
`concurrent_calls.py` measures); the framing's decode alone is in `provider_frames.py`.

    .venv/bin/python bench/session_frames.py [--frames N] [--repeats R]
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import bench_frames as bf

from app.calls.framed_stream import FramedStream
from app.calls.join_tokens import JoinTokens
from app.calls.service import CallService
from app.calls.session import CallSession, SessionSettings
from app.calls.transport import TransportClosed
from app.events.log import CallEventLog
from app.media.formats import PCMU_8K, AudioFormat
from app.pipeline.base import CallInfo, Pipeline, PipelineEvent
from app.providers.twilio import TwilioFraming
from app.schemas.calls import StartCallRequest
from app.settings import Settings
from app.store.db import Database
from app.store.repositories import CallRepository, EventRepository


class MemorySocket:
    """Hands out the stream's messages as fast as they are asked for, then closes."""

    def __init__(self, messages: list[str]) -> None:
        self._messages = iter(messages)

    async def receive(self) -> str:
        try:
            return next(self._messages)
        except StopIteration:
            raise TransportClosed("done") from None

    async def send(self, message: str | bytes) -> None:
        pass

    async def close(self, code: int = 1000, reason: str = "") -> None:
        pass


class SilentAgent(Pipeline):
    """Takes μ-law and says nothing."""

    accepted_formats = (PCMU_8K,)

    def __init__(self) -> None:
        self.frames = 0

    async def start(self, info: CallInfo, audio_format: AudioFormat) -> None:
        pass

    async def send_audio(self, audio: bytes) -> None:
        self.frames += 1

    async def send_dtmf(self, digit: str) -> None:
        pass

    async def events(self) -> AsyncIterator[PipelineEvent]:
        await asyncio.Event().wait()
        yield  # type: ignore[misc]

    async def close(self, reason: str | None = None) -> None:
        pass


async def one_run(calls: CallService, messages: list[str]) -> float:
    """µs of CPU per caller frame for one call carrying `messages` after its start."""
    row, _ = await calls.create_call(StartCallRequest(firstSpeakerSettings={"user": {}}))
    agent = SilentAgent()
    stream = FramedStream(MemorySocket([bf.twilio_start_message(), *messages]), TwilioFraming())
    session = CallSession(row, stream, agent, calls, SessionSettings())
    started = time.process_time()
    await session.run()
    elapsed = time.process_time() - started
    assert agent.frames == len(messages), (agent.frames, len(messages))
    return elapsed / len(messages) * 1e6


async def main() -> None:
    args = bf.bench_args(__doc__)
    media = bf.twilio_media_messages()
    messages = [media[i & bf.MASK] for i in range(args.frames)]
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}")
        await db.migrate()
        settings = Settings(_env_file=None, data_dir=Path(tmp), secret_key="bench")  # type: ignore[call-arg]
        events = CallEventLog(EventRepository(db))
        calls = CallService(settings, CallRepository(db), events, JoinTokens("bench"))
        await one_run(calls, messages[:1000])  # warm-up
        runs = [await one_run(calls, messages) for _ in range(args.repeats)]
        await db.dispose()
    bf.print_machine("callbridge call-session benchmark")
    print(f"\nCallSession, Twilio μ-law in → μ-law agent, {args.frames} frames, {args.repeats} runs")
    print(f"  CPU per caller frame: min {min(runs):.2f} µs, median {statistics.median(runs):.2f} µs")
    print("  (includes the framing's decode; the session's own share is this minus provider_frames' decode)")


if __name__ == "__main__":
    asyncio.run(main())
