"""Test audio for the fake carrier: a speech-like signal, WAV in/out, and round-trip analysis."""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.media.resample import StreamResampler


def speech_like(seconds: float, rate: int = 8000, seed: int = 7) -> bytes:
    """s16le band-limited noise (300-3400 Hz) with a 4 Hz syllable envelope: unambiguous to correlate."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spectrum[(freqs < 300) | (freqs > 3400)] = 0
    noise = np.fft.irfft(spectrum, n)
    t = np.arange(n) / rate
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, np.pi))
    signal = noise / np.max(np.abs(noise)) * envelope * 12000
    return signal.astype("<i2").tobytes()


def read_wav(path: Path, rate: int) -> bytes:
    """A 16-bit PCM WAV as mono s16le at `rate` (channels mixed, resampled if needed)."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV files are supported")
        channels, source_rate = wav.getnchannels(), wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype("<i2")
    pcm = samples.tobytes()
    if source_rate != rate:
        pcm = StreamResampler(source_rate, rate).process(pcm)
    return pcm


def write_wav(path: Path, pcm: bytes, rate: int) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)


@dataclass(frozen=True, slots=True)
class RoundTrip:
    lag_ms: float  # how much later the sent audio came back
    correlation: float  # normalised correlation of sent vs returned audio at that lag


def measure_round_trip(sent: bytes, returned: bytes, rate: int) -> RoundTrip | None:
    """Align what came back with what was sent; None when nothing came back."""
    x = np.frombuffer(sent, dtype="<i2").astype(np.float64)
    y = np.frombuffer(returned, dtype="<i2").astype(np.float64)
    if len(x) == 0 or len(y) == 0 or not np.any(y):
        return None
    n = 1 << int(np.ceil(np.log2(len(x) + len(y))))
    xcorr = np.fft.irfft(np.fft.rfft(y, n) * np.conj(np.fft.rfft(x, n)), n)
    lag = int(np.argmax(xcorr[: len(y)]))
    overlap = min(len(x), len(y) - lag)
    if overlap <= 0:
        return None
    a, b = x[:overlap], y[lag : lag + overlap]
    denominator = np.linalg.norm(a) * np.linalg.norm(b)
    correlation = float(a @ b / denominator) if denominator else 0.0
    return RoundTrip(lag_ms=lag / rate * 1000.0, correlation=correlation)


def round_trip_line(trip: RoundTrip | None) -> str:
    """The report line of a simulated call's round trip (every simulator prints the same one)."""
    if trip is None:
        return "  round trip: no agent audio came back"
    return f"  round trip: lag {trip.lag_ms:.0f} ms, correlation {trip.correlation:.3f}"
