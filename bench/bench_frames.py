"""Frames, timing and CLI shared by both benchmarks. Imports nothing from `app/` (pipecat_anchor uses it).

The signal is 440 Hz + 1.1 kHz tones plus 300-3400 Hz noise, 5.12 s long, cut into 256 distinct 20 ms
frames that the benchmarks cycle. The noise is built in the frequency domain, so it is the same waveform
at every sample rate.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import statistics
import timeit
import warnings
from collections.abc import Callable

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

N_FRAMES = 256
MASK = N_FRAMES - 1  # frame i of a run is frames[i & MASK]
FRAME_MS = 20
SECONDS = N_FRAMES * FRAME_MS / 1000
STREAM_SID = "MZ" + "2" * 32


def speech_like(rate: int, seed: int = 7) -> np.ndarray:
    """The 5.12 s test signal at `rate` Hz as int16 (peak about -6 dBFS)."""
    n = int(SECONDS * rate)
    t = np.arange(n) / rate
    rng = np.random.default_rng(seed)
    bins = np.arange(int(300 * SECONDS), int(3400 * SECONDS) + 1)
    spectrum = np.zeros(n // 2 + 1, dtype=complex)
    spectrum[bins] = rng.standard_normal(len(bins)) + 1j * rng.standard_normal(len(bins))
    noise = np.fft.irfft(spectrum, n)
    noise *= 0.1 / np.sqrt(np.mean(noise**2))
    mix = 0.2 * np.sin(2 * np.pi * 440 * t) + 0.15 * np.sin(2 * np.pi * 1100 * t) + noise
    return np.round(mix / np.max(np.abs(mix)) * 16000).astype(np.int16)


def pcm_frames(rate: int) -> list[bytes]:
    """256 distinct 20 ms frames of s16le PCM at `rate`."""
    data = speech_like(rate).astype("<i2").tobytes()
    size = rate * FRAME_MS // 1000 * 2
    return [data[i * size : (i + 1) * size] for i in range(N_FRAMES)]


def ulaw_frames() -> list[bytes]:
    """256 distinct 20 ms frames of G.711 μ-law at 8 kHz (160 bytes each)."""
    return [audioop.lin2ulaw(frame, 2) for frame in pcm_frames(8000)]


def twilio_start_message() -> str:
    """A Twilio Media Streams `start` message for a μ-law 8 kHz inbound stream."""
    media_format = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    start = {"accountSid": "AC" + "0" * 32, "streamSid": STREAM_SID, "callSid": "CA" + "1" * 32}
    start |= {"tracks": ["inbound"], "customParameters": {}, "mediaFormat": media_format}
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": STREAM_SID, "start": start})


def twilio_media(i: int, payload: str) -> dict[str, object]:
    """The `i`-th (from 0) Twilio `media` message of the stream, `payload` already base64."""
    media = {"track": "inbound", "chunk": str(i + 1), "timestamp": str(i * FRAME_MS), "payload": payload}
    return {"event": "media", "sequenceNumber": str(i + 2), "media": media, "streamSid": STREAM_SID}


def twilio_media_messages() -> list[str]:
    """256 full Twilio `media` messages carrying the μ-law frames as base64."""
    return [json.dumps(twilio_media(i, base64.b64encode(f).decode())) for i, f in enumerate(ulaw_frames())]


def time_per_frame(
    run: Callable[[int], object], frames: int, repeats: int, setup: Callable[[], object] | None = None
) -> tuple[float, float]:
    """(min, median) µs per frame of `run(frames)`, timed `repeats` times with `timeit` (GC off).

    `setup`, when given, runs untimed before the warm-up and before each timed run.
    """
    setup = setup or (lambda: None)
    setup()
    run(200)  # warm-up
    runs = timeit.repeat(lambda: run(frames), setup=setup, number=1, repeat=repeats)
    per_frame = [t / frames * 1e6 for t in runs]
    return min(per_frame), statistics.median(per_frame)


def bench_args(doc: str | None) -> argparse.Namespace:
    """Parse `--frames` and `--repeats`."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--frames", type=int, default=50_000, help="frames per timed run (default 50000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per number (default 5)")
    return parser.parse_args()


def note(*lines: str) -> None:
    """Print lines."""
    print("\n".join(lines))


def print_machine(title: str, **versions: str) -> None:
    """Print the title, then platform, CPU model, Python, numpy and the given library versions."""
    cpu = platform.processor() or "unknown"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    info = {
        "platform": platform.platform(),
        "cpu": f"{cpu} ({os.cpu_count()} logical CPUs)",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "numpy": np.__version__,
        **versions,
    }
    note(title, *(f"{key:>8}: {value}" for key, value in info.items()))


def snr_db(reference: np.ndarray, decoded: np.ndarray, max_delay: int = 64) -> float:
    """SNR of `decoded` against `reference` at the codec delay (0-`max_delay` samples) that fits best."""
    x = reference.astype(np.float64)
    y = decoded.astype(np.float64)
    n = min(len(x), len(y)) - max_delay
    best = max(range(max_delay), key=lambda d: float(np.dot(x[:n], y[d : d + n])))
    error = x[:n] - y[best : best + n]
    return 10.0 * np.log10(np.sum(x[:n] ** 2) / np.sum(error**2))
