"""Anchor: pipecat's TwilioFrameSerializer on the same frames as bench/media_path.py (µs per 20 ms frame).

Run through bench/pipecat_anchor.sh, which installs pipecat-ai in a throwaway virtualenv. Imports nothing
from `app/`. Method as reference/anchors.md §6.1: setup at audio_in_sample_rate=16000, deserialize and
serialize awaited in one event loop after a 200-frame warm-up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from importlib.metadata import version

import bench_frames as bf
from pipecat.clocks.system_clock import SystemClock
from pipecat.frames.frames import OutputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.utils.asyncio.task_manager import TaskManager

RATE = 16000


async def make_serializer() -> TwilioFrameSerializer:
    """A serializer set up the way a pipecat pipeline with 16 kHz input sets it up."""
    params = TwilioFrameSerializer.InputParams(auto_hang_up=False)
    serializer = TwilioFrameSerializer(bf.STREAM_SID, params=params)
    worker = PipelineWorker(Pipeline([]))
    clock, tasks = SystemClock(), TaskManager()
    setup = FrameProcessorSetup(
        clock=clock, task_manager=tasks, pipeline_worker=worker, audio_in_sample_rate=RATE
    )
    await serializer.setup(setup)
    return serializer


def timed(loop: asyncio.AbstractEventLoop, step: Callable[[int], Awaitable[object]]) -> Callable[[int], None]:
    """A `run(n)` for time_per_frame that awaits `step(i)` for i in range(n) in one event-loop run."""

    async def frames(n: int) -> None:
        for i in range(n):
            await step(i)

    return lambda n: loop.run_until_complete(frames(n))


def main() -> None:
    args = bf.bench_args(__doc__)
    loop = asyncio.new_event_loop()
    serializer = loop.run_until_complete(make_serializer())
    messages, mask = bf.twilio_media_messages(), bf.MASK
    outgoing = [
        OutputAudioRawFrame(audio=pcm, sample_rate=RATE, num_channels=1) for pcm in bf.pcm_frames(RATE)
    ]
    deserialize, serialize = serializer.deserialize, serializer.serialize

    async def both(i: int) -> None:
        await deserialize(messages[i & mask])
        await serialize(outgoing[i & mask])

    runs: dict[str, Callable[[int], Awaitable[object]]] = {
        "deserialize (Twilio JSON -> 16 kHz InputAudioRawFrame)": lambda i: deserialize(messages[i & mask]),
        "serialize (16 kHz OutputAudioRawFrame -> Twilio JSON)": lambda i: serialize(outgoing[i & mask]),
        "deserialize + serialize (round trip)": both,
    }
    bf.print_machine(
        "pipecat TwilioFrameSerializer anchor", pipecat=version("pipecat-ai"), soxr=version("soxr")
    )
    print(f"\n{args.frames:,} frames x {args.repeats} repeats, 200-frame warm-up; µs per 20 ms frame")
    print(f"{'operation':<56}{'median':>8}{'min':>8}")
    for name, step in runs.items():
        low, median = bf.time_per_frame(timed(loop, step), args.frames, args.repeats)
        print(f"{name:<56}{median:>8.2f}{low:>8.2f}")
    bf.note(
        f"Setup: auto_hang_up=False, audio_in_sample_rate={RATE}, other parameters at pipecat's defaults",
        "(soxr VHQ stream resampler, cleared after 0.2 s idle). The 640 B output frames are built once and",
        "reused, so serialize excludes constructing the frame. Anchor (anchors.md §6.2, pipecat 1.14.0,",
        "CPython 3.11.7): deserialize 7.4, serialize 5.5, round trip 13.2 µs.",
    )
    loop.close()


if __name__ == "__main__":
    main()
