"""The simulator's audio helpers: WAV files at any rate, and round-trip alignment."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from app.simulator.audio import measure_round_trip, read_wav, speech_like, write_wav


def test_a_44100_hz_stereo_wav_is_read_as_8khz_mono(tmp_path: Path) -> None:
    t = np.arange(22050) / 44100
    left = (8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    stereo = np.stack([left, left], axis=1).ravel().tobytes()
    path = tmp_path / "in.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(44100)
        wav.writeframes(stereo)
    pcm = read_wav(path, 8000)
    assert len(pcm) == 4000 * 2


def test_write_then_read_is_lossless_at_the_same_rate(tmp_path: Path) -> None:
    pcm = speech_like(0.5)
    write_wav(tmp_path / "x.wav", pcm, 8000)
    assert read_wav(tmp_path / "x.wav", 8000) == pcm


def test_round_trip_finds_the_lag_and_a_perfect_correlation() -> None:
    sent = speech_like(1.0)
    returned = b"\x00\x00" * 160 + sent  # 20 ms later
    trip = measure_round_trip(sent, returned, 8000)
    assert trip is not None and trip.lag_ms == 20.0 and trip.correlation > 0.999


def test_silence_back_is_no_round_trip() -> None:
    assert measure_round_trip(speech_like(0.5), b"\x00\x00" * 4000, 8000) is None
