"""Every provider framing's media path next to Twilio's: CPU per 20 ms of audio and added latency.

Run: `.venv/bin/python bench/provider_frames.py [--frames 50000] [--repeats 5]`. Prints numbers; asserts
nothing. Same method as bench/media_path.py (which times its Twilio rows with `cpu_cost` from here); each
row is one provider's framing on one wire format, with the agent format `negotiate` picks.
bench/README.md says what each number means.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import bench_frames as bf

from app.media.codecs import encode_from_pcm16
from app.media.formats import PCMU_8K, AudioFormat, Encoding, pcm16
from app.media.framing import FrameSplitter
from app.media.path import AudioConverter, build_converter, negotiate
from app.providers.base import StreamAudio, StreamFraming, StreamStart
from app.providers.exotel import ExotelFraming
from app.providers.plivo import PlivoFraming
from app.providers.telnyx import TelnyxFraming
from app.providers.twilio import TwilioFraming

Factory = Callable[[AudioFormat, AudioFormat], AudioConverter]
Message = dict[str, Any]


@dataclass(frozen=True)
class Wire:
    """One provider framing on one wire format, and the messages the bench feeds it.

    Inbound messages are numbered from the start's: the `j`-th media message (from 0) has sequence number
    j + 2, chunk j + 1, and carries `inbound_ms` of audio starting at j * inbound_ms.
    """

    provider: str
    fmt: AudioFormat
    framing: Callable[[], StreamFraming]
    start: str
    media: Callable[[int, int, str], Message]  # (j, timestamp ms, base64 payload) -> media message
    inbound_ms: int = bf.FRAME_MS
    #: The framing reorders by sequence number (Telnyx): every message of a run must carry a new one.
    reorders: bool = False


def frames_in(fmt: AudioFormat) -> list[bytes]:
    """The 256 test frames encoded in `fmt` (any encoding, rate and byte order)."""
    if fmt == PCMU_8K:
        return bf.ulaw_frames()
    return [encode_from_pcm16(frame, fmt) for frame in bf.pcm_frames(fmt.sample_rate)]


def wire_name(fmt: AudioFormat) -> str:
    """Short name of a format: `PCMU 8k`, `L16 16k BE`; pipeline formats (s16le) read `PCM16 16k`."""
    rate = f"{fmt.sample_rate // 1000}k"
    if fmt.encoding is not Encoding.L16:
        return f"{fmt.encoding.value.upper()} {rate}"
    return f"L16 {rate} {'BE' if fmt.byte_order == 'big' else 'LE'}"


def agent_name(fmt: AudioFormat) -> str:
    return f"PCM16 {fmt.sample_rate // 1000}k" if fmt == pcm16(fmt.sample_rate) else wire_name(fmt)


def conversion(wire: AudioFormat, agent: AudioFormat) -> str:
    """What `build_converter(wire, agent)` does, in words."""
    if wire == agent:
        return "passthrough"
    steps = []
    if wire.encoding is not Encoding.L16 or agent.encoding is not Encoding.L16:
        steps.append("G.711")
    elif wire.byte_order != agent.byte_order:
        steps.append("byteswap")
    if wire.sample_rate != agent.sample_rate:
        steps.append(f"FIR {wire.sample_rate // 1000}<->{agent.sample_rate // 1000}k")
    return " + ".join(steps)


# --- the providers' messages (shapes as each framing's decode reads them) ---------------------------------


def twilio() -> Wire:
    """Twilio Media Streams: μ-law 8 kHz, the messages of bench_frames (also pipecat_anchor's)."""
    start = bf.twilio_start_message()
    return Wire("Twilio", PCMU_8K, TwilioFraming, start, lambda j, _, payload: bf.twilio_media(j, payload))


def telnyx(fmt: AudioFormat) -> Wire:
    """Telnyx `rtp` bidirectional mode: PCMU 8 kHz, or L16 16 kHz in network byte order."""
    media_format = {"encoding": fmt.encoding.value.upper(), "sample_rate": fmt.sample_rate, "channels": 1}
    start = {"call_control_id": "v3:bench", "media_format": media_format}
    start_message = {"event": "start", "sequence_number": "1", "stream_id": "S", "start": start}

    def media(j: int, timestamp: int, payload: str) -> Message:
        body = {"track": "inbound", "chunk": str(j + 1), "timestamp": str(timestamp), "payload": payload}
        return {"event": "media", "sequence_number": str(j + 2), "stream_id": "S", "media": body}

    framing = partial(TelnyxFraming, "big")
    return Wire("Telnyx", fmt, framing, json.dumps(start_message), media, reorders=True)


def plivo(fmt: AudioFormat) -> Wire:
    """Plivo Audio Streams: `audio/x-mulaw` 8 kHz or `audio/x-l16` 8/16 kHz little-endian."""
    media_format = {
        "encoding": "audio/x-mulaw" if fmt == PCMU_8K else "audio/x-l16",
        "sampleRate": fmt.sample_rate,
    }
    start = {"callId": "c", "streamId": "s", "mediaFormat": media_format}
    start_message = {"event": "start", "sequenceNumber": 1, "start": start}

    def media(j: int, timestamp: int, payload: str) -> Message:
        body = {"track": "inbound", "timestamp": str(timestamp), "chunk": j + 1, "payload": payload}
        return {"event": "media", "sequenceNumber": j + 2, "streamId": "s", "media": body}

    return Wire("Plivo", fmt, partial(PlivoFraming, "little"), json.dumps(start_message), media)


def exotel(rate: int) -> Wire:
    """Exotel's Voicebot stream at `rate` (`?sample-rate=`): L16 little-endian, 100 ms per inbound message."""
    media_format = {"encoding": "audio/x-raw", "sample_rate": str(rate), "bit_rate": "16"}
    start = {"stream_sid": "s", "call_sid": "c", "media_format": media_format}
    start_message = {"event": "start", "sequence_number": "1", "stream_sid": "s", "start": start}

    def media(j: int, timestamp: int, payload: str) -> Message:
        body = {"chunk": str(j + 1), "timestamp": str(timestamp), "payload": payload}
        return {"event": "media", "sequence_number": str(j + 2), "stream_sid": "s", "media": body}

    framing = partial(ExotelFraming, rate)
    return Wire("Exotel", pcm16(rate), framing, json.dumps(start_message), media, inbound_ms=100)


TWILIO = twilio()
L16_16K_BE = AudioFormat(Encoding.L16, 16000, "big")
ANY: Sequence[AudioFormat] | None = None  # the agent takes any format (the echo agent's default)

#: (wire, the formats the agent accepts): the agent format is what `negotiate` picks, as CallSession does.
CASES: list[tuple[Wire, Sequence[AudioFormat] | None]] = [
    (TWILIO, ANY),
    (TWILIO, [pcm16(8000)]),
    (TWILIO, [pcm16(16000)]),
    (telnyx(L16_16K_BE), [pcm16(16000)]),
    (telnyx(PCMU_8K), ANY),
    (telnyx(PCMU_8K), [pcm16(8000)]),
    (telnyx(PCMU_8K), [pcm16(16000)]),
    (plivo(pcm16(16000)), [pcm16(16000)]),
    (plivo(PCMU_8K), ANY),
    (plivo(pcm16(8000)), [pcm16(8000)]),
    (plivo(pcm16(8000)), [pcm16(16000)]),
    (exotel(16000), [pcm16(16000)]),
    (exotel(8000), [pcm16(8000)]),
    (exotel(8000), [pcm16(16000)]),
]


# --- timing ----------------------------------------------------------------------------------------------


def grouped(frames: list[bytes], k: int, count: int) -> list[bytes]:
    """`count` chunks of `k` consecutive frames each, cycling through the 256 frames."""
    return [b"".join(frames[(j * k + t) & bf.MASK] for t in range(k)) for j in range(count)]


def media_messages(wire: Wire, count: int) -> list[str]:
    """`count` inbound media messages carrying `wire.inbound_ms` of the test signal each."""
    payloads = grouped(frames_in(wire.fmt), wire.inbound_ms // bf.FRAME_MS, count)
    return [
        json.dumps(wire.media(j, j * wire.inbound_ms, base64.b64encode(payload).decode()))
        for j, payload in enumerate(payloads)
    ]


def started(wire: Wire) -> StreamFraming:
    """A fresh framing after the wire's `start`, checked to name the wire format."""
    framing = wire.framing()
    event = framing.decode(wire.start)
    if not isinstance(event, StreamStart) or event.audio_format != wire.fmt:
        raise RuntimeError(f"{wire.provider} start gave {event}, not {wire.fmt}")
    return framing


def chunk_ms(framing: StreamFraming, fmt: AudioFormat) -> float:
    """Duration of each outbound wire message (Playout cuts agent audio into chunks of this size)."""
    return fmt.duration_ms(framing.rules.chunk_bytes(fmt))


@dataclass(frozen=True)
class MediaPath:
    """One call's media path, bound the way CallSession and Playout call it, plus pre-built input."""

    decode: Callable[[str], object]
    encode: Callable[[bytes], str]
    to_agent: Callable[[bytes], bytes]
    to_wire: Callable[[bytes], bytes]
    messages: list[str]  # inbound media messages; a power of two of them, indexed [j & (len - 1)]
    outgoing: list[bytes]  # the agent's 20 ms frames
    chunks: list[bytes]  # outbound wire chunks, when a chunk holds more than one 20 ms frame
    k_in: int  # 20 ms frames per inbound message
    k_out: int  # 20 ms frames per outbound message


def frame_runs(p: MediaPath) -> dict[str, Callable[[int], None]]:
    """Runs over n frames for 20 ms framings: each message in and out carries one 20 ms frame."""
    decode, encode, to_agent, to_wire = p.decode, p.encode, p.to_agent, p.to_wire
    messages, outgoing, mask = p.messages, p.outgoing, len(p.messages) - 1

    def inbound(n: int) -> None:
        for i in range(n):
            to_agent(decode(messages[i & mask]).payload)  # type: ignore[attr-defined]

    def outbound(n: int) -> None:
        for i in range(n):
            encode(to_wire(outgoing[i & bf.MASK]))

    def round_trip(n: int) -> None:
        for i in range(n):
            to_agent(decode(messages[i & mask]).payload)  # type: ignore[attr-defined]
            encode(to_wire(outgoing[i & bf.MASK]))

    return {"in": inbound, "out": outbound, "both": round_trip}


def chunk_runs(p: MediaPath) -> dict[str, Callable[[int], None]]:
    """Runs over n frames for chunked framings (Exotel): one inbound message per `k_in` frames; every agent
    frame converted, and one outbound chunk of `k_out` frames encoded per `k_out` frames.

    The chunk encoded is pre-built from the same signal, so the runs time neither collecting the converted
    frames into it nor FrameSplitter (timed on its own in `splitter_costs`).
    """
    decode, encode, to_agent, to_wire = p.decode, p.encode, p.to_agent, p.to_wire
    messages, outgoing, chunks, mask = p.messages, p.outgoing, p.chunks, len(p.messages) - 1
    k_in, k_out = p.k_in, p.k_out
    unit = math.lcm(k_in, k_out)
    per_in, per_out = unit // k_in, unit // k_out

    def inbound(n: int) -> None:
        for j in range(n // k_in):
            to_agent(decode(messages[j & mask]).payload)  # type: ignore[attr-defined]

    def outbound(n: int) -> None:
        for j in range(n // k_out):
            for i in range(j * k_out, j * k_out + k_out):
                to_wire(outgoing[i & bf.MASK])
            encode(chunks[j & bf.MASK])

    def round_trip(n: int) -> None:
        for u in range(n // unit):
            for j in range(u * per_in, u * per_in + per_in):
                to_agent(decode(messages[j & mask]).payload)  # type: ignore[attr-defined]
            for i in range(u * unit, u * unit + unit):
                to_wire(outgoing[i & bf.MASK])
            for j in range(u * per_out, u * per_out + per_out):
                encode(chunks[j & bf.MASK])

    return {"in": inbound, "out": outbound, "both": round_trip}


def cpu_cost(
    wire: Wire, agent: AudioFormat, frames: int, repeats: int, make: Factory = build_converter
) -> dict[str, tuple[float, float]]:
    """(min, median) µs per 20 ms of audio inbound, outbound and one of each, the way the session runs them.

    Inbound: `framing.decode(message)` then `to_agent.convert(payload)`, per inbound message. Outbound:
    `to_wire.convert(frame)` per 20 ms agent frame, then `framing.encode_audio(chunk)` per outbound message.
    """
    framing = started(wire)
    k_in = wire.inbound_ms // bf.FRAME_MS
    k_out = round(chunk_ms(framing, wire.fmt) / bf.FRAME_MS)
    unit = math.lcm(k_in, k_out)
    frames -= frames % unit  # whole units, so the count of frames timed is exact
    count = bf.N_FRAMES
    if wire.reorders:  # a new sequence number for every message of a run (warm-up included)
        count = max(count, 1 << (max(frames, 200) // k_in - 1).bit_length())
    path = MediaPath(
        decode=framing.decode,
        encode=framing.encode_audio,
        to_agent=make(wire.fmt, agent).convert,
        to_wire=make(agent, wire.fmt).convert,
        messages=media_messages(wire, count),
        outgoing=frames_in(agent),
        chunks=grouped(frames_in(wire.fmt), k_out, bf.N_FRAMES) if k_out > 1 else [],
        k_in=k_in,
        k_out=k_out,
    )
    sample = framing.decode(path.messages[0])
    if not isinstance(sample, StreamAudio) or sample.payload != grouped(frames_in(wire.fmt), k_in, 1)[0]:
        raise RuntimeError(f"{wire.provider} did not decode its first media message to the first frames")
    runs = frame_runs(path) if unit == 1 else chunk_runs(path)

    def restart() -> None:
        """Before each run: the start again, so a reordering framing expects the first message's number."""
        framing.decode(wire.start)

    return {key: bf.time_per_frame(run, frames, repeats, restart) for key, run in runs.items()}


def pushes(push: Callable[[bytes], list[bytes]], frames: list[bytes]) -> Callable[[int], None]:
    """A run that pushes n of `frames` (cycled) into a FrameSplitter's `push`."""

    def run(n: int) -> None:
        for i in range(n):
            push(frames[i & bf.MASK])

    return run


def splitter_costs(frames: int, repeats: int) -> dict[tuple[int, int], tuple[list[str], float]]:
    """(wires, median µs) of `FrameSplitter.push` per 20 ms wire frame, per (frame bytes, chunk bytes)."""
    costs: dict[tuple[int, int], tuple[list[str], float]] = {}
    for wire, _ in CASES:
        name, wire_frames = f"{wire.provider} {wire_name(wire.fmt)}", frames_in(wire.fmt)
        key = (len(wire_frames[0]), wire.framing().rules.chunk_bytes(wire.fmt))
        if key in costs:
            if name not in costs[key][0]:
                costs[key][0].append(name)
            continue
        run = pushes(FrameSplitter(key[1]).push, wire_frames)
        costs[key] = [name], bf.time_per_frame(run, frames, repeats)[1]
    return costs


# --- report ----------------------------------------------------------------------------------------------

#: (header, format spec) of each column; the three groups are named above them.
COLUMNS = (
    ("provider", "<8"),
    ("wire", "<10"),
    ("agent", "<13"),
    ("conversion", "<19"),
    ("in", ">6"),
    ("out", ">6"),
    ("round trip (min)", ">16"),
    ("in", ">5"),
    ("out", ">5"),
    ("chunk", ">5"),
    ("+chunk", ">6"),
)
GROUPS = (("", 4), (" CPU µs per 20 ms of audio ", 3), (" added ms per direction ", 4))


def row(*cells: object) -> str:
    return "  ".join(f"{cell:{spec}}" for cell, (_, spec) in zip(cells, COLUMNS, strict=True)).rstrip()


def header() -> str:
    """The group line and the column line."""
    widths = [int(spec[1:]) for _, spec in COLUMNS]
    groups, first = [], 0
    for name, n in GROUPS:
        width = sum(widths[first : first + n]) + 2 * (n - 1)
        groups.append(f"{name:-^{width}}" if name else " " * width)
        first += n
    return "  ".join(groups).rstrip() + "\n" + row(*(name for name, _ in COLUMNS))


def section_providers(frames: int, repeats: int) -> None:
    """Print the table: one row per (provider framing, wire format, agent format)."""
    print("\nEvery provider framing: CPU per 20 ms of audio (µs) and added latency per direction (ms)")
    print(header())
    for wire, accepted in CASES:
        agent = negotiate(wire.fmt, accepted)
        cost = cpu_cost(wire, agent, frames, repeats)
        chunk = chunk_ms(started(wire), wire.fmt)
        print(
            row(
                wire.provider,
                wire_name(wire.fmt),
                agent_name(agent) + (" (any)" if accepted is ANY else ""),
                conversion(wire.fmt, agent),
                f"{cost['in'][1]:.2f}",
                f"{cost['out'][1]:.2f}",
                f"{cost['both'][1]:.2f} ({cost['both'][0]:.2f})",
                f"{build_converter(wire.fmt, agent).delay_ms:g}",
                f"{build_converter(agent, wire.fmt).delay_ms:g}",
                f"{chunk:g}",
                f"{chunk - bf.FRAME_MS:g}",
            )
        )
    bf.note(
        "CPU: in = decode one inbound message + convert its payload to the agent format; out = convert each",
        "20 ms agent frame + encode one outbound message per chunk; round trip = both, interleaved. All per",
        "20 ms of audio: Exotel's 100 ms inbound messages and 100/200 ms outbound chunks are timed whole and",
        "divided by 5 and 5/10. (any) = the agent takes any format, so negotiate keeps the wire's.",
        "Added ms: in/out = the converters' delay_ms (bench/media_path.py §2 checks it against the measured",
        "lag). chunk = ms of audio per outbound message; +chunk = chunk - 20: how long the first 20 ms agent",
        "frame of a chunk waits for the rest when the agent's audio arrives in real time (mean over the",
        "chunk: half that). Exotel also packs 100 ms per inbound message: its own delay, not callbridge's.",
    )
    print("Not in the round trip: FrameSplitter.push (Playout.enqueue), µs median per 20 ms wire frame:")
    for (frame, chunk_bytes), (names, cost) in splitter_costs(frames, repeats).items():
        print(f"  {frame:>5,} B frames into {chunk_bytes:>5,} B chunks {cost:>6.2f}   {', '.join(names)}")


def main() -> None:
    args = bf.bench_args(__doc__)
    bf.print_machine("callbridge provider framing benchmark")
    bf.note(
        "\nmethod: 256 distinct 20 ms frames of tones + noise, cycled; each provider's JSON in and out;",
        f"        {args.frames:,} frames x {args.repeats} repeats, 200-frame warm-up (timeit, GC off)",
    )
    section_providers(args.frames, args.repeats)


if __name__ == "__main__":
    main()
