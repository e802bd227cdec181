"""The streaming FIR resampler: exact lengths, flat passband, no aliases, tiny delay, seamless chunks."""

from __future__ import annotations

import numpy as np
import pytest

from app.media.resample import StreamResampler


def tone(freq: float, rate: int, seconds: float = 1.0, amplitude: float = 10000) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def run_chunks(resampler: StreamResampler, pcm: bytes, chunk_ms: int = 20) -> bytes:
    step = resampler.in_rate * chunk_ms // 1000 * 2
    return b"".join(resampler.process(pcm[i : i + step]) for i in range(0, len(pcm), step))


def level_db(pcm: bytes, skip: int = 400) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)[skip:]
    return 20 * np.log10(np.sqrt(np.mean(x**2)) + 1e-9)


RATE_PAIRS = [(8000, 16000), (16000, 8000), (8000, 24000), (24000, 8000), (16000, 24000), (24000, 16000)]


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_every_20ms_chunk_in_gives_exactly_20ms_out(in_rate: int, out_rate: int) -> None:
    resampler = StreamResampler(in_rate, out_rate)
    chunk = tone(440, in_rate, 0.02)
    for _ in range(10):
        assert len(resampler.process(chunk)) == out_rate // 50 * 2


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_speech_band_passes_within_half_a_db(in_rate: int, out_rate: int) -> None:
    for freq in (300, 1000, 3000):
        pcm = tone(freq, in_rate)
        out = run_chunks(StreamResampler(in_rate, out_rate), pcm)
        assert abs(level_db(out) - level_db(pcm)) < 0.5, freq


def test_downsampling_rejects_aliases_by_more_than_60_db() -> None:
    pcm = tone(5000, 16000)  # above the 4 kHz Nyquist of 8 kHz: would fold to 3 kHz
    out = run_chunks(StreamResampler(16000, 8000), pcm)
    assert level_db(out) - level_db(pcm) < -60


def test_upsampling_rejects_images_by_more_than_60_db() -> None:
    out = run_chunks(StreamResampler(8000, 16000), tone(1000, 8000))
    x = np.frombuffer(out, dtype="<i2").astype(np.float64)[800:]
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / 16000)
    wanted = spectrum[np.argmin(np.abs(freqs - 1000))]
    image = spectrum[np.argmin(np.abs(freqs - 7000))]
    assert 20 * np.log10(image / wanted) < -60


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_added_delay_is_under_two_milliseconds(in_rate: int, out_rate: int) -> None:
    resampler = StreamResampler(in_rate, out_rate)
    assert resampler.delay_ms < 2.0
    click = np.zeros(in_rate // 10, dtype="<i2")
    click[in_rate // 50] = 20000  # at 20 ms
    out = np.frombuffer(run_chunks(resampler, click.tobytes()), dtype="<i2")
    peak_ms = np.argmax(np.abs(out)) / out_rate * 1000
    assert abs(peak_ms - 20 - resampler.delay_ms) < 0.2


def test_chunked_output_equals_one_shot_output() -> None:
    pcm = tone(700, 8000, 0.5)
    whole = StreamResampler(8000, 16000).process(pcm)
    chunked = run_chunks(StreamResampler(8000, 16000), pcm, chunk_ms=20)
    assert whole == chunked


def test_reset_forgets_history() -> None:
    resampler = StreamResampler(8000, 16000)
    fresh = StreamResampler(8000, 16000).process(tone(440, 8000, 0.02))
    resampler.process(tone(1000, 8000, 0.1))
    resampler.reset()
    assert resampler.process(tone(440, 8000, 0.02)) == fresh
