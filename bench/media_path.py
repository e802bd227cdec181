"""Benchmark of callbridge's media path: CPU per 20 ms frame, added latency, calls per core.

Run: `.venv/bin/python bench/media_path.py [--frames 50000] [--repeats 5]`. Prints numbers; asserts nothing.
Method as reference/anchors.md §6.1; bench/README.md says what each number means. The CPU rows are
Twilio rows of bench/provider_frames.py, which times every provider framing the same way.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from functools import partial

import bench_frames as bf
import numpy as np
import soxr
from provider_frames import TWILIO, cpu_cost, frames_in

from app.media.codecs import decode_to_pcm16, encode_from_pcm16
from app.media.formats import PCMU_8K, AudioFormat, pcm16
from app.media.path import AudioConverter, build_converter
from app.media.resample import StreamResampler
from app.settings import Settings

GOAL_ROUND_TRIP_US = 5.0
GOAL_ADDED_MS = 20.0

Factory = Callable[[AudioFormat, AudioFormat], AudioConverter]
Step = Callable[[bytes], bytes]


def soxr_step(in_rate: int, out_rate: int, quality: str) -> Step:
    """s16le bytes -> s16le bytes through `soxr.ResampleStream`, the shape of `StreamResampler.process`."""
    stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)
    return lambda pcm: stream.resample_chunk(np.frombuffer(pcm, dtype="<i2")).tobytes()


class SoxrConverter:
    """Like app's Transcoder but with `soxr.ResampleStream` instead of our FIR (for comparison only)."""

    delay_ms = 0.0  # soxr's stream output is sample-aligned; its delay is the audio it holds back

    def __init__(self, source: AudioFormat, target: AudioFormat, quality: str) -> None:
        self.source, self.target, self._quality = source, target, quality
        self.reset()

    def convert(self, data: bytes) -> bytes:
        return encode_from_pcm16(self._resample(decode_to_pcm16(data, self.source)), self.target)

    def reset(self) -> None:
        self._resample = soxr_step(self.source.sample_rate, self.target.sample_rate, self._quality)


CASES: list[tuple[str, AudioFormat, Factory]] = [
    ("PCMU 8 kHz (passthrough)", PCMU_8K, build_converter),
    ("PCM16 8 kHz (decode only)", pcm16(8000), build_converter),
    ("PCM16 16 kHz (our FIR)", pcm16(16000), build_converter),
    ("PCM16 24 kHz (our FIR)", pcm16(24000), build_converter),
    ("PCM16 16 kHz, soxr LQ (cmp)", pcm16(16000), partial(SoxrConverter, quality="LQ")),
    ("PCM16 16 kHz, soxr HQ (cmp)", pcm16(16000), partial(SoxrConverter, quality="HQ")),
]
RESAMPLERS: dict[str, Callable[[int, int], Step]] = {
    "our FIR (StreamResampler)": lambda a, b: StreamResampler(a, b).process,
    "soxr.ResampleStream LQ": partial(soxr_step, quality="LQ"),
    "soxr.ResampleStream HQ": partial(soxr_step, quality="HQ"),
}


def step_cost(step: Step, chunks: list[bytes], frames: int, repeats: int) -> float:
    """Median µs per frame of one bare processing step (e.g. a resampler alone)."""

    def run(n: int) -> None:
        for i in range(n):
            step(chunks[i & bf.MASK])

    return bf.time_per_frame(run, frames, repeats)[1]


def to_float(data: bytes, fmt: AudioFormat) -> np.ndarray:
    return np.frombuffer(decode_to_pcm16(data, fmt), dtype="<i2").astype(np.float64)


def fft_resample(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Zero-delay band-limited resampling of a periodic signal: the reference the lag is measured against."""
    m = len(x) * out_rate // in_rate
    spectrum, out = np.fft.rfft(x), np.zeros(m // 2 + 1, dtype=complex)
    k = min(len(spectrum), len(out))
    out[:k] = spectrum[:k]
    return np.fft.irfft(out, m) * (m / len(x))


def lag_ms(out: np.ndarray, ref: np.ndarray, rate: int, max_ms: float = 100.0) -> float:
    """Delay of `out` behind `ref` in ms: cross-correlation peak, refined by parabolic interpolation."""
    size = 1 << (2 * len(out)).bit_length()
    xc = np.fft.irfft(np.fft.rfft(out, size) * np.conj(np.fft.rfft(ref[: len(out)], size)), size)
    span = int(rate * max_ms / 1000)
    window = np.concatenate([xc[-span:], xc[: span + 1]])  # lags -span .. +span
    i = int(np.argmax(window))
    y0, y1, y2 = window[i - 1], window[i], window[i + 1]
    lag = (i - span + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)) / rate * 1000
    return round(lag, 3) + 0.0  # no "-0.000"


def added_latency(make: Factory, source: AudioFormat, target: AudioFormat) -> tuple[float, float, float]:
    """(lag, mean held, max held) in ms, feeding the signal three times over in 20 ms chunks.

    Held = input consumed but not yet output, after each chunk, over the last 500 chunks (anchors.md §6.3).
    Lag = how far the output waveform trails a zero-delay resampling of the whole input.
    """
    converter, chunks = make(source, target), frames_in(source)
    outputs, held, out_ms = [], [], 0.0
    for i in range(3 * bf.N_FRAMES):
        outputs.append(converter.convert(chunks[i % bf.N_FRAMES]))
        out_ms += target.duration_ms(len(outputs[-1]))
        held.append((i + 1) * bf.FRAME_MS - out_ms)
    ref = fft_resample(to_float(b"".join(chunks) * 3, source), source.sample_rate, target.sample_rate)
    lag = lag_ms(to_float(b"".join(outputs), target), ref, target.sample_rate)
    return lag, statistics.fmean(held[-500:]), max(held[-500:])


def section_cpu(frames: int, repeats: int) -> dict[str, float]:
    """Print table 1 and return the median round trip per case."""
    print(f"\n1. CPU per 20 ms frame, µs: median (min)\n{'pipeline format':<30}", end="")
    print(f"{'inbound':>16}{'outbound':>16}{'round trip':>16}")
    costs: dict[str, float] = {}
    for name, fmt, make in CASES:
        cost = cpu_cost(TWILIO, fmt, frames, repeats, make)
        costs[name] = cost["both"][1]
        print(f"{name:<30}" + "".join(f"{f'{cost[k][1]:.2f} ({cost[k][0]:.2f})':>16}" for k in cost))
    print("of which the resampling step alone (PCM16 in and out), µs median:")
    for name, make_step in RESAMPLERS.items():
        rates = ((8000, 16000), (16000, 8000))
        up, down = (step_cost(make_step(a, b), bf.pcm_frames(a), frames, repeats) for a, b in rates)
        print(f"  {name:<28}8k->16k {up:>6.2f}   16k->8k {down:>6.2f}")
    bf.note(
        "inbound = Twilio JSON -> decode -> convert to pipeline format; outbound = convert -> Twilio JSON;",
        "round trip = one of each. Anchor: pipecat TwilioFrameSerializer round trip 13.2 µs (anchors.md",
        "§6.2; bench/pipecat_anchor.sh measures it on this machine).",
    )
    return costs


def section_latency() -> dict[str, float]:
    """Print table 2 and return the worse direction's added latency per case."""
    print("\n2. Added latency per direction, ms")
    print(f"{'converter':<30}{'direction':>12}{'delay_ms':>10}{'lag':>8}{'held mean/max':>16}{'added':>8}")
    added: dict[str, float] = {}
    for name, fmt, make in CASES:
        added[name] = 0.0
        for way, source, target in (("in", PCMU_8K, fmt), ("out", fmt, PCMU_8K)):
            lag, held_mean, held_max = added_latency(make, source, target)
            added[name] = max(added[name], lag + held_mean)
            direction = f"{way} {source.sample_rate // 1000}k->{target.sample_rate // 1000}k"
            cells = (
                f"{make(source, target).delay_ms:>10.3f}{lag:>8.3f}{f'{held_mean:.2f} / {held_max:.2f}':>16}"
            )
            print(f"{name:<30}{direction:>12}{cells}{lag + held_mean:>8.2f}")
    lead = Settings().playout_lead_ms
    bf.note(
        "delay_ms = the converter's own figure; lag = measured delay of the output waveform (cross-",
        "correlation against zero-delay resampling); held = input consumed but not yet output (mean/max",
        "over 500 chunks); added = lag + mean held. Anchor: soxr LQ holds ~32 ms (anchors.md §6.3).",
        f"Playout lead: CALLBRIDGE_PLAYOUT_LEAD_MS = {lead} ms. Outbound audio is sent at most this",
        "far ahead of real time and buffered at the provider: not added delay when the agent's audio",
        "arrives in real time.",
    )
    return added


def section_goals(costs: dict[str, float], added: dict[str, float]) -> None:
    """Print table 3: goals vs measured, and calls per core."""
    print(f"\n3. Goals vs measured: round trip <= {GOAL_ROUND_TRIP_US:g} µs, <= {GOAL_ADDED_MS:g} ms added")
    print(f"{'pipeline format':<30}{'round trip µs':>14}{'met':>5}{'worst added ms':>16}{'met':>5}", end="")
    print(f"{'calls/core':>12}")
    for name, _, _ in CASES:
        cpu_ok = "yes" if costs[name] <= GOAL_ROUND_TRIP_US else "NO"
        lat_ok = "yes" if added[name] <= GOAL_ADDED_MS else "NO"
        calls = bf.FRAME_MS * 1000 / costs[name]
        print(f"{name:<30}{costs[name]:>14.2f}{cpu_ok:>5}{added[name]:>16.2f}{lat_ok:>5}{calls:>12,.0f}")
    bf.note(
        "calls/core = 20 ms / median round trip per frame: an estimate from the media path's CPU only",
        "(JSON, base64, codec, resampler), not WebSocket I/O, the event loop, pacing or the agent pipeline.",
    )


def main() -> None:
    args = bf.bench_args(__doc__)
    bf.print_machine("callbridge media path benchmark", soxr=soxr.__version__)
    bf.note(
        "\nmethod: 256 distinct 20 ms frames of tones + noise, cycled; full Twilio media JSON in and out;",
        f"        {args.frames:,} frames x {args.repeats} repeats, 200-frame warm-up (timeit, GC off)",
    )
    costs = section_cpu(args.frames, args.repeats)
    section_goals(costs, section_latency())


if __name__ == "__main__":
    main()
