"""Benchmark of the `websocket` agent pipeline's hop: CPU per 20 ms frame and added latency, both framings.

Run: `.venv/bin/python bench/pipeline_hops.py [--frames 50000] [--repeats 5] [--loop-frames 20000]
[--loop-repeats 3] [--seconds 5]`. Prints numbers; asserts nothing. bench/README.md says what each
number means.

1. The framings alone: `encode_audio` of one 20 ms caller frame and `decode` of one agent frame (native:
   binary PCM; twilio: a `media` message as a Twilio bot such as pipecat sends it), timed like the other
   benchmarks (bench_frames.time_per_frame).
2. Loopback: a real `WebSocketPipeline` connected over 127.0.0.1 to an echo agent in a separate process,
   next to a bare `websockets` client sending the same messages (the floor: no framing, outbox or events).
   Full speed, with a bounded number of frames in flight (the outbox drops audio past 50): wall and this
   process's CPU per frame. Paced at real time: time from `send_audio` to the `AgentAudio` event.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import multiprocessing
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from multiprocessing.connection import Connection
from typing import Any

import bench_frames as bf
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from app.media.formats import pcm16
from app.pipeline.agent_protocol import AgentFraming, Message, NativeFraming
from app.pipeline.base import AgentAudio, CallInfo
from app.pipeline.twilio_agent_framing import TwilioAgentFraming
from app.pipeline.websocket import WebSocketOptions, WebSocketPipeline

# Frames in flight in the full-speed runs: well under the outbox's 50, so nothing is dropped.
WINDOW = 16
WARM_UP_FRAMES = 500
CALL = CallInfo(call_id="bench", agent_id="bench", system_prompt="", provider_call_id="CA" + "1" * 32)


@dataclass(frozen=True)
class Case:
    """One row: a framing and the caller frames it carries."""

    name: str
    framing: str  # "native" | "twilio"
    rate: int

    def frames(self) -> list[bytes]:
        """The 256 test frames in the agent's format (PCM16 at `rate`, or μ-law for twilio)."""
        return bf.ulaw_frames() if self.framing == "twilio" else bf.pcm_frames(self.rate)

    def make_framing(self) -> AgentFraming:
        """A fresh framing, opened as the pipeline opens it."""
        framing: AgentFraming = (
            TwilioAgentFraming() if self.framing == "twilio" else NativeFraming(pcm16(self.rate))
        )
        framing.opening(CALL)
        return framing

    def options(self, url: str) -> WebSocketOptions:
        """The pipeline options for this row."""
        extra = {"sampleRate": self.rate} if self.framing == "native" else {}
        return WebSocketOptions.model_validate({"url": url, "framing": self.framing, **extra})


CASES = [
    Case("native PCM16 8 kHz", "native", 8000),
    Case("native PCM16 16 kHz (default)", "native", 16000),
    Case("twilio μ-law 8 kHz", "twilio", 8000),
]


def agent_media(stream_sid: str, frame: bytes) -> str:
    """A `media` message as a Twilio bot sends it (pipecat's TwilioFrameSerializer shape)."""
    payload = base64.b64encode(frame).decode()
    return orjson.dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}}).decode()


def agent_messages(case: Case, framing: AgentFraming) -> list[Message]:
    """What the agent sends back for each test frame."""
    if isinstance(framing, TwilioAgentFraming):
        return [agent_media(framing.stream_sid, frame) for frame in case.frames()]
    return list(case.frames())


# --- 1. the framings alone ------------------------------------------------------------------------


def framing_cost(case: Case, frames: int, repeats: int) -> dict[str, tuple[float, float]]:
    """(min, median) µs per frame of encode_audio, decode, and one of each."""
    framing = case.make_framing()
    outgoing, incoming, mask = case.frames(), agent_messages(case, framing), bf.MASK
    encode, decode = framing.encode_audio, framing.decode
    sample = decode(incoming[0]).events
    if not (len(sample) == 1 and isinstance(sample[0], AgentAudio) and sample[0].audio == outgoing[0]):
        raise RuntimeError(f"{case.name}: the agent's first frame did not decode to the first test frame")

    def run_encode(n: int) -> None:
        for i in range(n):
            encode(outgoing[i & mask])

    def run_decode(n: int) -> None:
        for i in range(n):
            decode(incoming[i & mask])

    def run_both(n: int) -> None:
        for i in range(n):
            encode(outgoing[i & mask])
            decode(incoming[i & mask])

    runs = {"encode": run_encode, "decode": run_decode, "both": run_both}
    return {name: bf.time_per_frame(run, frames, repeats) for name, run in runs.items()}


# --- 2. loopback ----------------------------------------------------------------------------------


async def echo_agent(ws: ServerConnection) -> None:
    """Native: binary PCM back as it came. Twilio: every `media` payload back in a bot's `media` message."""
    stream_sid = ""
    with contextlib.suppress(ConnectionClosed):
        async for message in ws:
            if isinstance(message, bytes):
                await ws.send(message)
                continue
            data = orjson.loads(message)
            event = data.get("event")
            if event == "start":
                stream_sid = data["start"]["streamSid"]
            elif event == "media":
                payload = data["media"]["payload"]
                reply = {"event": "media", "streamSid": stream_sid, "media": {"payload": payload}}
                await ws.send(orjson.dumps(reply).decode())
            elif event == "stop":
                return


def agent_process(conn: Connection) -> None:
    """The echo agent's process: serve on 127.0.0.1, send the port, stop when told."""

    async def main() -> None:
        async with serve(echo_agent, "127.0.0.1", 0, compression=None) as server:
            conn.send(server.sockets[0].getsockname()[1])
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)

    run_loop(main())


def loop_name() -> str:
    """The event loop the benchmark runs on."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    return f"uvloop {uvloop.__version__}"


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on uvloop when it is installed (uvicorn, and so callbridge serve, uses it then)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


@contextlib.contextmanager
def running_agent() -> Iterator[str]:
    """Start the echo agent process; yield its URL; stop it."""
    parent, child = multiprocessing.get_context("spawn").Pipe()
    process = multiprocessing.get_context("spawn").Process(target=agent_process, args=(child,), daemon=True)
    process.start()
    try:
        if not parent.poll(30):
            raise RuntimeError("the echo agent did not start")
        yield f"ws://127.0.0.1:{parent.recv()}/agent"
    finally:
        with contextlib.suppress(OSError):
            parent.send("stop")
        process.join(5)
        if process.is_alive():
            process.terminate()
            process.join()


class Hop:
    """One way to send a frame to the agent and get its echo: the pipeline, or a bare websocket."""

    async def send(self, i: int) -> None:
        """Send test frame i."""
        raise NotImplementedError

    async def echo(self) -> None:
        """Wait for the next echoed frame."""
        raise NotImplementedError

    async def close(self) -> None:
        """Hang up."""


class PipelineHop(Hop):
    """callbridge's WebSocketPipeline: send_audio in, AgentAudio events out."""

    def __init__(self, pipeline: WebSocketPipeline, frames: Sequence[bytes]) -> None:
        self.pipeline, self.frames = pipeline, frames
        self._events: AsyncIterator[object] = pipeline.events()

    @classmethod
    async def open(cls, case: Case, url: str) -> PipelineHop:
        """Connect a pipeline to the agent and start the call."""
        pipeline = WebSocketPipeline(case.options(url))
        await pipeline.start(CALL, pipeline.audio_format)
        return cls(pipeline, case.frames())

    async def send(self, i: int) -> None:
        await self.pipeline.send_audio(self.frames[i & bf.MASK])

    async def echo(self) -> None:
        while not isinstance(await anext(self._events), AgentAudio):
            pass

    async def close(self) -> None:
        await self.pipeline.close("hangup")


class BareHop(Hop):
    """The floor: a plain websockets client sending pre-encoded messages and reading the replies."""

    def __init__(self, ws: ClientConnection, messages: Sequence[Message]) -> None:
        self.ws, self.messages = ws, messages

    @classmethod
    async def open(cls, case: Case, url: str) -> BareHop:
        """Connect as the pipeline does (no compression) and send the framing's opening."""
        ws = await connect(url, compression=None, max_size=2**22)
        framing = case.make_framing()
        for message in framing.opening(CALL):
            await ws.send(message)
        messages = [m for frame in case.frames() for m in framing.encode_audio(frame)]
        return cls(ws, messages)

    async def send(self, i: int) -> None:
        await self.ws.send(self.messages[i & bf.MASK])

    async def echo(self) -> None:
        await self.ws.recv()

    async def close(self) -> None:
        await self.ws.close()


async def full_speed(hop: Hop, frames: int) -> tuple[float, float]:
    """(wall, this process's CPU) µs per frame, sending `frames` frames with at most WINDOW unanswered."""
    wall, cpu = time.perf_counter(), time.process_time()
    answered = 0
    for i in range(frames):
        await hop.send(i)
        if i + 1 - answered >= WINDOW:
            await hop.echo()
            answered += 1
    while answered < frames:
        await hop.echo()
        answered += 1
    return (time.perf_counter() - wall) / frames * 1e6, (time.process_time() - cpu) / frames * 1e6


async def paced(hop: Hop, seconds: float) -> list[float]:
    """ms from sending each frame to its echo, one frame every 20 ms for `seconds`."""
    count = int(seconds * 1000 / bf.FRAME_MS)
    sent: list[float] = []
    returned: list[float] = []

    async def receive() -> None:
        while len(returned) < count:
            await hop.echo()
            returned.append(time.perf_counter())

    receiver = asyncio.create_task(receive())
    start = time.perf_counter()
    for i in range(count):
        await asyncio.sleep(max(0.0, start + i * bf.FRAME_MS / 1000 - time.perf_counter()))
        sent.append(time.perf_counter())
        await hop.send(i)
    async with asyncio.timeout(10):
        await receiver
    return [(r - s) * 1000 for s, r in zip(sent, returned, strict=True)]


@dataclass
class LoopRow:
    """One loopback row's results."""

    name: str
    wall_us: float
    cpu_us: float
    latency_ms: list[float]


async def loopback(
    case: Case,
    url: str,
    opener: Callable[[Case, str], Awaitable[Hop]],
    frames: int,
    repeats: int,
    seconds: float,
) -> LoopRow:
    """Warm up, run full speed `repeats` times (the medians), then paced, on one connection."""
    hop = await opener(case, url)
    try:
        async with asyncio.timeout(30 + (frames * repeats + WARM_UP_FRAMES) / 1000):  # lost echo: fail
            await full_speed(hop, WARM_UP_FRAMES)
            runs = [await full_speed(hop, frames) for _ in range(repeats)]
        latency = await paced(hop, seconds)
    finally:
        await hop.close()
    wall, cpu = (statistics.median(values) for values in zip(*runs, strict=True))
    return LoopRow(case.name, wall, cpu, latency)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def loopback_rows(url: str, frames: int, repeats: int, seconds: float) -> list[LoopRow]:
    """Every case through the pipeline and bare, in that order per case."""
    rows = []
    for case in CASES:
        row = await loopback(case, url, PipelineHop.open, frames, repeats, seconds)
        rows.append(row)
        bare = await loopback(case, url, BareHop.open, frames, repeats, seconds)
        bare.name = "  bare websockets, same messages"
        rows.append(bare)
    return rows


# --- main -----------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--frames", type=int, default=50_000, help="frames per timed framing run")
    parser.add_argument("--repeats", type=int, default=5, help="timed framing runs per number")
    parser.add_argument("--loop-frames", type=int, default=20_000, help="frames per full-speed loopback run")
    parser.add_argument("--loop-repeats", type=int, default=3, help="full-speed loopback runs per row")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of paced loopback per row")
    return parser.parse_args()


def main() -> None:
    """Run both parts and print the tables."""
    args = parse_args()
    loop = loop_name()
    bf.print_machine(
        "websocket agent pipeline hop", websockets=version("websockets"), orjson=version("orjson"), loop=loop
    )

    print(f"\n1. Framing alone: µs per 20 ms frame, median (min) of {args.repeats} x {args.frames:,} frames")
    print(f"{'framing':<32}{'encode_audio':>16}{'decode':>16}{'both':>16}")
    for case in CASES:
        cost = framing_cost(case, args.frames, args.repeats)
        cells = "".join(f"{f'{cost[k][1]:.2f} ({cost[k][0]:.2f})':>16}" for k in ("encode", "decode", "both"))
        print(f"{case.name:<32}{cells}")

    with running_agent() as url:
        rows: list[LoopRow] = []

        async def run() -> None:
            rows.extend(await loopback_rows(url, args.loop_frames, args.loop_repeats, args.seconds))

        run_loop(run())

    print(
        f"\n2. Loopback to an echo agent (another process) over 127.0.0.1, {loop}\n"
        f"   full speed: median of {args.loop_repeats} x {args.loop_frames:,} frames, at most {WINDOW} in "
        "flight, µs per frame round trip;\n"
        f"   paced: {args.seconds:g} s at real time, ms from send to echo"
    )
    print(f"{'':<34}{'full speed':>20}{'paced latency (ms)':>27}")
    print(f"{'path':<34}{'wall µs':>10}{'CPU µs':>10}{'median':>9}{'p95':>9}{'max':>9}")
    for row in rows:
        lat = row.latency_ms
        print(
            f"{row.name:<34}{row.wall_us:>10.1f}{row.cpu_us:>10.1f}"
            f"{statistics.median(lat):>9.3f}{percentile(lat, 95):>9.3f}{max(lat):>9.3f}"
        )
    bf.note(
        "",
        "CPU µs is this process only: the bridge side (framing, outbox, websockets client, event queue) or",
        "the bare client. The echo agent's CPU is in its own process. Pipeline rows time send_audio to the",
        "AgentAudio event that pipeline.events() yields; bare rows time send to recv of the same messages.",
    )


if __name__ == "__main__":
    main()
