"""Streaming resamplers side by side: µs per 20 ms frame each way, alias/image rejection, added delay.

For every rate pair callbridge converts between (wire 8/16/24 kHz, agents 8/16/24/48 kHz), each candidate
runs as a call does: one stream per direction, fed 20 ms chunks of s16le PCM, returning bytes. The
candidates: the FIR callbridge had before issue 13 (`OldFir`, copied below from git history, commit
620c26e), the blocked polyphase FIR in app/media/resample.py (`StreamResampler`), and soxr's
`ResampleStream` at each quality (QQ, LQ, MQ, HQ, VHQ) when `soxr` is installed (`pip install -e
'.[bench]'`; its rows are skipped without it). bench/README.md says how each number is measured.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import bench_frames as bf
import numpy as np

from app.media.resample import StreamResampler

try:
    import soxr
except ImportError:
    soxr = None

Step = Callable[[bytes], bytes]
Factory = Callable[[int, int], Step]

#: The pairs in use: a wire rate (8, 16, 24 kHz) against an agent rate (8, 16, 24, 48 kHz).
PAIRS = [(8000, 16000), (8000, 24000), (16000, 24000), (8000, 48000), (16000, 48000), (24000, 48000)]
SOXR_QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")
AMPLITUDE = 16000  # test tones, about -6 dBFS


class OldFir:
    """callbridge's resampler before issue 13 (app/media/resample.py at 620c26e), unchanged but renamed.

    Kaiser-windowed polyphase FIR, 29 taps per branch at the slower rate, 70 dB design; one
    `np.correlate` per output phase per chunk.
    """

    TAPS_PER_PHASE = 29
    STOPBAND_DB = 70.0
    MAX_ALIGNED_STEP = 12

    def __init__(self, in_rate: int, out_rate: int) -> None:
        g = math.gcd(in_rate, out_rate)
        self.in_rate, self.out_rate = in_rate, out_rate
        self._up, self._down = out_rate // g, in_rate // g
        taps = self._design_lowpass(self._up, self._down)
        self._taps_per_branch = -(-len(taps) // self._up)
        padded = np.zeros(self._taps_per_branch * self._up)
        padded[: len(taps)] = taps
        self._branches = [padded[p :: self._up][::-1].astype(np.float32).copy() for p in range(self._up)]
        self.delay_ms = (len(taps) - 1) / 2 / (self._up * in_rate) * 1000.0
        self.reset()

    @classmethod
    def _design_lowpass(cls, up: int, down: int) -> np.ndarray:
        step = up * down
        if step > cls.MAX_ALIGNED_STEP:
            step = 1
        delay = -(-cls.TAPS_PER_PHASE * max(up, down) // (2 * step)) * step
        n_taps = 2 * delay + 1
        cutoff = 0.5 / max(up, down)
        beta = 0.1102 * (cls.STOPBAND_DB - 8.7)
        k = np.arange(n_taps) - (n_taps - 1) / 2
        taps = 2 * cutoff * np.sinc(2 * cutoff * k) * np.kaiser(n_taps, beta)
        return taps * (up / taps.sum())

    def reset(self) -> None:
        self._buf = np.zeros(self._taps_per_branch - 1, dtype=np.float32)
        self._upsampled = np.empty(0, dtype=np.float32)
        self._phase = 0

    def process(self, pcm: bytes) -> bytes:
        n = len(pcm) // 2
        if n == 0:
            return b""
        history = self._taps_per_branch - 1
        if len(self._buf) != n + history:
            buf = np.zeros(n + history, dtype=np.float32)
            buf[:history] = self._buf[len(self._buf) - history :]
            self._buf = buf
            self._upsampled = np.empty(n * self._up, dtype=np.float32)
        else:
            self._buf[:history] = self._buf[n:].copy()
        self._buf[history:] = np.frombuffer(pcm, dtype="<i2", count=n)
        out = self._upsampled
        for phase, kernel in enumerate(self._branches):
            out[phase :: self._up] = np.correlate(self._buf, kernel, "valid")
        if self._down > 1:
            out = out[self._phase :: self._down]
            self._phase = (self._phase - n * self._up) % self._down
        return out.clip(-32768, 32767).astype("<i2").tobytes()


def soxr_step(in_rate: int, out_rate: int, quality: str) -> Step:
    """s16le bytes -> s16le bytes through `soxr.ResampleStream`, the shape of `StreamResampler.process`."""
    stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)
    return lambda pcm: stream.resample_chunk(np.frombuffer(pcm, dtype="<i2")).tobytes()


def candidates() -> dict[str, Factory]:
    """Name -> factory of a fresh stream for (in_rate, out_rate)."""
    found: dict[str, Factory] = {
        "old FIR (before #13)": lambda a, b: OldFir(a, b).process,
        "new (StreamResampler)": lambda a, b: StreamResampler(a, b).process,
    }
    if soxr is not None:
        found |= {f"soxr {q}": partial(soxr_step, quality=q) for q in SOXR_QUALITIES}
    return found


@dataclass(frozen=True)
class Direction:
    """One candidate in one direction."""

    us: tuple[float, float]  # (min, median) µs per 20 ms frame
    rejection_db: float  # worst alias (down) or image (up) rejection over the test tones
    lag_ms: float  # delay of the output waveform
    held_ms: float  # mean input consumed but not yet output, after each chunk

    @property
    def added_ms(self) -> float:
        return self.lag_ms + self.held_ms


def stream(step: Step, pcm: bytes, rate: int) -> bytes:
    """Feed `pcm` through `step` in 20 ms chunks; all of the output."""
    size = rate * bf.FRAME_MS // 1000 * 2
    return b"".join(step(pcm[i : i + size]) for i in range(0, len(pcm), size))


def amplitude(x: np.ndarray, freq: float, rate: int) -> float:
    """Amplitude of the `freq` component of x (Hann-windowed projection)."""
    window = np.hanning(len(x))
    phasor = np.exp(-2j * np.pi * freq * np.arange(len(x)) / rate)
    return 2 * abs(np.sum(x * window * phasor)) / np.sum(window)


def passband_edge(in_rate: int, out_rate: int) -> float:
    """The band aliases and images are measured into: 3.4 kHz through 8 kHz, else 87.5 % of the lower
    Nyquist (7 kHz through 16 kHz)."""
    low = min(in_rate, out_rate)
    return 3400.0 if low == 8000 else 0.875 * low / 2


def rejection_db(make: Factory, in_rate: int, out_rate: int) -> float:
    """Worst rejection (dB) of what lands in the passband but should not, over a grid of tones.

    Down: tones above the output's Nyquist that fold onto 200 Hz .. the passband edge; the aliased
    component's amplitude against the input's. Up: tones 200 Hz .. the edge; each image (k * in_rate +/- f,
    below the output's Nyquist) against the tone itself in the output.
    """
    t = np.arange(int(0.6 * in_rate)) / in_rate
    worst = math.inf
    for folded in np.linspace(200, passband_edge(in_rate, out_rate), 8):
        if out_rate < in_rate:
            tones = [k * out_rate + s * folded for k in range(1, in_rate // out_rate + 1) for s in (-1, 1)]
            probes = [(f, folded) for f in tones if out_rate / 2 < f < in_rate / 2]
        else:
            images = [k * in_rate + s * folded for k in range(1, out_rate // in_rate + 1) for s in (-1, 1)]
            probes = [(folded, f) for f in images if in_rate / 2 < f < out_rate / 2]
        for tone_hz, probe_hz in probes:
            pcm = np.round(AMPLITUDE * np.sin(2 * np.pi * tone_hz * t)).astype("<i2").tobytes()
            out = stream(make(in_rate, out_rate), pcm, in_rate)
            y = np.frombuffer(out, dtype="<i2").astype(np.float64)[int(0.15 * out_rate) :]
            reference = AMPLITUDE if out_rate < in_rate else amplitude(y, tone_hz, out_rate)
            leak = max(amplitude(y, probe_hz, out_rate), 1e-9)
            worst = min(worst, 20 * math.log10(reference / leak))
    return round(worst, 1) + 0.0  # no "-0"


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
    return (i - span + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)) / rate * 1000


def delay(make: Factory, in_rate: int, out_rate: int) -> tuple[float, float]:
    """(lag, mean held) in ms: the test signal three times over in 20 ms chunks (as bench/media_path.py)."""
    signal = bf.speech_like(in_rate)
    pcm = signal.astype("<i2").tobytes() * 3
    step = make(in_rate, out_rate)
    size = in_rate * bf.FRAME_MS // 1000 * 2
    outputs, held, out_samples = [], [], 0
    for i in range(0, len(pcm), size):
        outputs.append(step(pcm[i : i + size]))
        out_samples += len(outputs[-1]) // 2
        held.append((i + size) / 2 / in_rate * 1000 - out_samples / out_rate * 1000)
    out = np.frombuffer(b"".join(outputs), dtype="<i2").astype(np.float64)
    ref = fft_resample(np.tile(signal.astype(np.float64), 3), in_rate, out_rate)
    return round(lag_ms(out, ref, out_rate), 3) + 0.0, round(statistics.fmean(held[-500:]), 3) + 0.0


def measure(make: Factory, in_rate: int, out_rate: int, frames: int, repeats: int) -> Direction:
    chunks = bf.pcm_frames(in_rate)
    step = make(in_rate, out_rate)

    def run(n: int) -> None:
        for i in range(n):
            step(chunks[i & bf.MASK])

    lag, held = delay(make, in_rate, out_rate)
    return Direction(
        bf.time_per_frame(run, frames, repeats), rejection_db(make, in_rate, out_rate), lag, held
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000, help="frames per timed run (default 10000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per number (default 5)")
    parser.add_argument(
        "--pairs",
        default=",".join(f"{a // 1000}:{b // 1000}" for a, b in PAIRS),
        help="kHz pairs, both directions each (default: all in use, e.g. 8:16,16:24)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    pairs = [tuple(int(r) * 1000 for r in p.split(":")) for p in args.pairs.split(",")]
    soxr_version = soxr.__version__ if soxr is not None else "not installed (its rows are skipped)"
    bf.print_machine("Streaming resamplers, 20 ms chunks of s16le mono PCM", soxr=soxr_version)
    makers = candidates()
    for low, high in pairs:
        bf.note(
            "",
            f"{low // 1000} kHz <-> {high // 1000} kHz   (up = {low // 1000} -> {high // 1000}, "
            f"down = {high // 1000} -> {low // 1000})",
            f"{'':<24}{'µs/frame up':>16}{'µs/frame down':>16}{'rejection dB':>16}{'added ms':>14}"
            f"{'lag+held up':>16}{'lag+held down':>16}",
            f"{'':<24}{'median (min)':>16}{'median (min)':>16}{'up / down':>16}{'up / down':>14}",
        )
        for name, make in makers.items():
            up = measure(make, low, high, args.frames, args.repeats)
            down = measure(make, high, low, args.frames, args.repeats)
            rejection = f"{up.rejection_db:.0f} / {down.rejection_db:.0f}"
            bf.note(
                f"{name:<24}{f'{up.us[1]:.2f} ({up.us[0]:.2f})':>16}"
                f"{f'{down.us[1]:.2f} ({down.us[0]:.2f})':>16}{rejection:>16}"
                f"{f'{up.added_ms:.2f} / {down.added_ms:.2f}':>14}"
                f"{f'{up.lag_ms:.2f}+{up.held_ms:.1f}':>16}{f'{down.lag_ms:.2f}+{down.held_ms:.1f}':>16}"
            )
    bf.note(
        "",
        "µs/frame: one 20 ms chunk in, bytes out, median (min) of the runs. rejection: worst over a tone",
        "grid of images (up) or aliases folding into 200 Hz .. the passband edge (down; 3.4 kHz through",
        "8 kHz, 7 kHz through 16 kHz), in dB below the tone. added = lag (output waveform vs a zero-delay",
        "FFT resampling) + held (input consumed but not yet output, mean over the last 500 chunks).",
    )


if __name__ == "__main__":
    main()
