"""A pipecat Twilio bot server that echoes the caller: the peer `concurrent_calls.py --peer pipecat` measures.

Run: `python bench/pipecat_twilio_bot.py --port P`. It never imports `app/`.

It is pipecat's Twilio example reduced to its cheapest configuration: FastAPI on uvicorn, a POST route that
answers the voice webhook with `<Connect><Stream url=".../ws">` TwiML (the signature is not checked), and a
`/ws` route that reads Twilio's `connected` and `start` messages (`parse_telephony_websocket`) and runs
`transport.input() → AudioEcho → transport.output()` with `TwilioFrameSerializer` (`auto_hang_up=False`, so
no Twilio credentials) and `FastAPIWebsocketTransport`. Audio stays at 8 kHz both ways (no resampling), with
no VAD, STT, LLM or TTS, no RTVI, no turn tracking and no idle timeout. The output transport sends
`audio_out_10ms_chunks` (pipecat's default 4: 40 ms) per media message.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response, WebSocket
from loguru import logger
from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner

RATE = 8000  # Twilio's μ-law rate, kept through the pipeline: no resampler either way
WEBHOOK_PATH = "/twiml"
STREAM_PATH = "/ws"


class AudioEcho(FrameProcessor):
    """Each InputAudioRawFrame goes back as an OutputAudioRawFrame (same audio, same rate); counts them."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.frames = 0
        self.rates: set[int] = set()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Echo input audio downstream (to the output transport); pass every other frame on."""
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self.frames += 1
            self.rates.add(frame.sample_rate)
            echo = OutputAudioRawFrame(
                audio=frame.audio, sample_rate=frame.sample_rate, num_channels=frame.num_channels
            )
            await self.push_frame(echo)
        else:
            await self.push_frame(frame, direction)


def echo_worker(
    websocket: WebSocket, call_data: Any, echo: AudioEcho, in_rate: int = RATE, out_rate: int = RATE
) -> tuple[PipelineWorker, FastAPIWebsocketTransport]:
    """pipecat's Twilio example with `echo` in place of STT, LLM and TTS, for a stream whose `start`
    `parse_telephony_websocket` read (`call_data`); no Twilio credentials, so no auto hang-up. The tests'
    bot (tests/e2e/pipecat_bot.py) runs it at other rates too."""
    serializer = TwilioFrameSerializer(
        stream_sid=call_data.stream_id,
        call_sid=call_data.call_id,
        params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
    )
    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            audio_in_sample_rate=in_rate,
            audio_out_sample_rate=out_rate,
            add_wav_header=False,
            serializer=serializer,
        ),
    )
    worker = PipelineWorker(
        Pipeline([transport.input(), echo, transport.output()]),
        params=PipelineParams(audio_in_sample_rate=in_rate, audio_out_sample_rate=out_rate),
        enable_rtvi=False,
        enable_turn_tracking=False,
        idle_timeout_secs=None,
    )

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport: FastAPIWebsocketTransport, client: Any) -> None:
        await worker.cancel()

    return worker, transport


async def run_call(websocket: WebSocket) -> None:
    """One call's pipeline, from Twilio's `start` message to the caller's hang-up."""
    await websocket.accept()
    transport_type, call_data = await parse_telephony_websocket(websocket)
    if transport_type != "twilio" or not call_data.stream_id:
        await websocket.close()
        return
    worker, _ = echo_worker(websocket, call_data, AudioEcho())
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


def make_app() -> FastAPI:
    """The bot's two routes: the voice webhook (TwiML) and the media stream."""
    app = FastAPI()

    @app.post(WEBHOOK_PATH)
    async def voice_webhook(request: Request) -> Response:
        ws_url = f"ws://{request.url.netloc}{STREAM_PATH}"
        stream = f'<Stream url="{ws_url}"/>'
        twiml = f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect>{stream}</Connect></Response>'
        return Response(twiml, media_type="application/xml")

    @app.websocket(STREAM_PATH)
    async def media_stream(websocket: WebSocket) -> None:
        await run_call(websocket)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # pipecat logs every call's set-up and teardown (and more) at DEBUG through loguru's default stderr
    # handler; with only a WARNING handler left, loguru drops the rest before formatting it, so logging
    # does not weigh in pipecat's CPU figure.
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    uvicorn.run(make_app(), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
