"""RtpSession's cost per 20 ms packet: in (parse, order, queue, receive), out (build, sendto); PCMU, G.722.

In: each datagram goes to the session's receive path as the socket would hand it over, then comes out
of `await session.receive()`; the G.722 rows add decoding the payload to 16 kHz PCM. Out: `send_audio` on
a real loopback socket (nobody reads the sink; the kernel drops what overflows); the G.722 rows add
encoding the 16 kHz frame first. Timing runs inside the event loop with `perf_counter`, GC off, over
`--frames` packets, `--repeats` runs after a warm-up; µs per packet as min / median of the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import socket
import statistics
import time
from collections.abc import Awaitable, Callable

import bench_frames as bf

from app.media.g722 import G722Decoder, G722Encoder
from app.sip.ports import RtpPortRange
from app.sip.rtp import RtpPacket
from app.sip.rtp_session import RtpAudio, RtpSession

HOST = "127.0.0.1"
PCMU_PT = 0
G722_PT = 9
SENDER = (HOST, 40000)  # the latched source every inbound datagram claims


async def time_per_packet(
    run: Callable[[int], Awaitable[None]], frames: int, repeats: int
) -> tuple[float, float]:
    await run(200)  # warm-up
    per_packet: list[float] = []
    gc.disable()
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            await run(frames)
            per_packet.append((time.perf_counter() - start) / frames * 1e6)
    finally:
        gc.enable()
    return min(per_packet), statistics.median(per_packet)


async def open_session(payload_type: int, sink_port: int) -> RtpSession:
    session = await RtpSession.open(HOST, RtpPortRange(41000, 41999))
    session.configure(HOST, sink_port, payload_type, 8000, 101, 160)
    return session


def datagrams(payload_type: int, payloads: list[bytes]) -> list[bytes]:
    """One packet per sequence number (65536), so the runs wrap the sequence like a long call."""
    return [
        RtpPacket(payload_type, sequence, sequence * 160, 0x1234, payloads[sequence & bf.MASK]).build()
        for sequence in range(65536)
    ]


async def bench_in(
    payload_type: int, payloads: list[bytes], sink_port: int, args: argparse.Namespace, g722: bool
) -> tuple[float, float]:
    session = await open_session(payload_type, sink_port)
    packets = datagrams(payload_type, payloads)
    decoder = G722Decoder()
    position = 0

    async def run(n: int) -> None:
        nonlocal position
        deliver = session._on_rtp  # what the datagram protocol calls
        for _ in range(n):
            deliver(packets[position & 0xFFFF], SENDER)
            position += 1
            item = await session.receive()
            if g722 and isinstance(item, RtpAudio):
                decoder.decode(item.payload)

    try:
        return await time_per_packet(run, args.frames, args.repeats)
    finally:
        session.close()


async def bench_out(
    payload_type: int, frames_in: list[bytes], sink_port: int, args: argparse.Namespace, g722: bool
) -> tuple[float, float]:
    session = await open_session(payload_type, sink_port)
    encoder = G722Encoder()

    async def run(n: int) -> None:
        for i in range(n):
            frame = frames_in[i & bf.MASK]
            session.send_audio(encoder.encode(frame) if g722 else frame)

    try:
        return await time_per_packet(run, args.frames, args.repeats)
    finally:
        session.close()


async def main() -> None:
    args = bf.bench_args(__doc__)
    bf.print_machine("RtpSession per 20 ms packet")
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((HOST, 0))
    sink_port = sink.getsockname()[1]
    ulaw = bf.ulaw_frames()
    wideband = bf.pcm_frames(16000)
    encoder = G722Encoder()
    g722_payloads = [encoder.encode(frame) for frame in wideband]
    rows = [
        ("PCMU in", await bench_in(PCMU_PT, ulaw, sink_port, args, g722=False)),
        ("G.722 in (+ decode)", await bench_in(G722_PT, g722_payloads, sink_port, args, g722=True)),
        ("PCMU out", await bench_out(PCMU_PT, ulaw, sink_port, args, g722=False)),
        ("G.722 out (+ encode)", await bench_out(G722_PT, wideband, sink_port, args, g722=True)),
    ]
    sink.close()
    bf.note("", f"{'path':<22} {'µs per packet min / median':>28}")
    for name, (low, median) in rows:
        bf.note(f"{name:<22} {f'{low:.1f} / {median:.1f}':>28}")


if __name__ == "__main__":
    asyncio.run(main())
