"""A real pipecat bot for the e2e tests, set up the way pipecat documents a Twilio Media Streams bot.

The setup is the one in pipecat's Twilio example, built by `bench/pipecat_twilio_bot.echo_worker` (the
bench's peer runs the same): a FastAPI websocket route, `parse_telephony_websocket` to read Twilio's
`connected` and `start` messages, pipecat's own `TwilioFrameSerializer` and `FastAPIWebsocketTransport`,
and a `PipelineWorker` run by a `WorkerRunner`. An `AudioEcho` processor takes the place of STT, LLM and
TTS. There are no Twilio credentials, so auto hang-up is off.

uvicorn serves the app in the caller's event loop on a loopback socket that this module binds itself
(port 0), so the tests need no free-port guessing.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, WebSocket
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.workers.runner import WorkerRunner

from bench.pipecat_twilio_bot import AudioEcho, echo_worker

PATH = "/twilio"


@dataclass
class BotSession:
    """What the bot saw of one connection."""

    transport_type: str = ""
    stream_sid: str | None = None
    call_sid: str | None = None
    from_number: str | None = None
    custom_parameters: dict[str, Any] = field(default_factory=dict)
    echoed_frames: int = 0
    echoed_rates: set[int] = field(default_factory=set)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    error: BaseException | None = None


@dataclass
class PipecatBot:
    """A running bot: the URL to dial and one BotSession per connection, in order."""

    url: str
    in_rate: int
    out_rate: int
    sessions: list[BotSession] = field(default_factory=list)


async def _run_session(websocket: WebSocket, session: BotSession, in_rate: int, out_rate: int) -> None:
    """One call, as pipecat's Twilio example runs it (with the echo in place of STT/LLM/TTS)."""
    await websocket.accept()
    transport_type, call_data = await parse_telephony_websocket(websocket)
    session.transport_type = transport_type
    session.stream_sid, session.call_sid = call_data.stream_id, call_data.call_id
    session.from_number, session.custom_parameters = call_data.from_number, dict(call_data.body)
    if transport_type != "twilio" or not call_data.stream_id:
        await websocket.close()
        return

    echo = AudioEcho()
    worker, _ = echo_worker(websocket, call_data, echo, in_rate, out_rate)

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    try:
        await runner.run()
    finally:
        session.echoed_frames, session.echoed_rates = echo.frames, echo.rates


@asynccontextmanager
async def pipecat_bot(in_rate: int = 8000, out_rate: int = 8000) -> AsyncIterator[PipecatBot]:
    """Serve the bot on 127.0.0.1 (a port of its own) for the duration of the block.

    `in_rate`/`out_rate` are the pipeline's `audio_in_sample_rate`/`audio_out_sample_rate`: 8000 as in
    pipecat's Twilio example (no resampling), or pipecat's defaults 16000/24000 (soxr both ways).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    bot = PipecatBot(url=f"ws://127.0.0.1:{port}{PATH}", in_rate=in_rate, out_rate=out_rate)

    app = FastAPI()

    @app.websocket(PATH)
    async def twilio_stream(websocket: WebSocket) -> None:
        session = BotSession()
        bot.sessions.append(session)
        try:
            await _run_session(websocket, session, in_rate, out_rate)
        except Exception as exc:
            session.error = exc
            raise
        finally:
            session.finished.set()

    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="pipecat-bot")
    try:
        while not server.started:
            if serving.done():
                await serving  # raises what stopped it
                raise RuntimeError("the pipecat bot's server stopped before it started")
            await asyncio.sleep(0.01)
        yield bot
    finally:
        server.should_exit = True
        await serving
        sock.close()
