"""The streaming FIR resampler: exact lengths, flat passband, no aliases, tiny delay, seamless chunks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from app.media.resample import RATES_IN_USE, StreamResampler, design
from app.simulator.audio import speech_like


def tone(freq: float, rate: int, seconds: float = 1.0, amplitude: float = 10000) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def run_chunks(resampler: StreamResampler, pcm: bytes, chunk_ms: int = 20) -> bytes:
    step = resampler.in_rate * chunk_ms // 1000 * 2
    return b"".join(resampler.process(pcm[i : i + step]) for i in range(0, len(pcm), step))


def level_db(pcm: bytes, skip: int = 400) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)[skip:]
    return 20 * np.log10(np.sqrt(np.mean(x**2)) + 1e-9)


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def response_db(in_rate: int, out_rate: int, size: int = 1 << 17) -> tuple[np.ndarray, np.ndarray]:
    """The designed prototype filter's magnitude (dB, 0 at DC) and its frequencies (Hz)."""
    d = design(in_rate, out_rate)
    magnitude = np.abs(np.fft.rfft(d.taps / d.up, size))
    return np.fft.rfftfreq(size, 1 / (in_rate * d.up)), 20 * np.log10(magnitude + 1e-12)


def passband_edge(in_rate: int, out_rate: int) -> float:
    """3.4 kHz on paths through 8 kHz, 7 kHz through 16 kHz, 87.5 % of the lower Nyquist otherwise."""
    low = min(in_rate, out_rate)
    return 3400.0 if low == 8000 else 0.875 * low / 2


RATE_PAIRS = [(8000, 16000), (16000, 8000), (8000, 24000), (24000, 8000), (16000, 24000), (24000, 16000)]
PAIRS_IN_USE = list(itertools.permutations(RATES_IN_USE, 2))
DOWN_PAIRS = [(a, b) for a, b in PAIRS_IN_USE if a > b]


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


# Quality of the design, for every pair of the rates in use (what bench/resamplers.py times).


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS_IN_USE)
def test_designed_stop_band_is_at_least_60_db_down(in_rate: int, out_rate: int) -> None:
    freqs, db = response_db(in_rate, out_rate)
    assert db[freqs >= design(in_rate, out_rate).stopband_hz].max() < -60


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS_IN_USE)
def test_designed_passband_is_flat_within_half_a_db(in_rate: int, out_rate: int) -> None:
    freqs, db = response_db(in_rate, out_rate)
    band = db[freqs <= passband_edge(in_rate, out_rate)]
    assert band.max() < 0.5 and band.min() > -0.5


@pytest.mark.parametrize(("in_rate", "out_rate"), DOWN_PAIRS)
def test_a_tone_that_would_alias_comes_out_60_db_below_a_passband_tone(in_rate: int, out_rate: int) -> None:
    alias = out_rate - passband_edge(in_rate, out_rate)  # folds onto the passband edge
    wanted = run_chunks(StreamResampler(in_rate, out_rate), tone(1000, in_rate))
    folded = run_chunks(StreamResampler(in_rate, out_rate), tone(alias, in_rate))
    assert level_db(folded, skip=out_rate // 50) - level_db(wanted, skip=out_rate // 50) < -60


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS_IN_USE)
def test_tones_up_to_the_passband_edge_keep_their_level_within_half_a_db(in_rate: int, out_rate: int) -> None:
    for freq in (100.0, 1000.0, passband_edge(in_rate, out_rate)):
        pcm = tone(freq, in_rate, 0.5)
        out = run_chunks(StreamResampler(in_rate, out_rate), pcm)
        assert abs(level_db(out, skip=out_rate // 50) - level_db(pcm, skip=in_rate // 50)) < 0.5, freq


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS_IN_USE)
def test_group_delay_is_at_most_two_milliseconds(in_rate: int, out_rate: int) -> None:
    resampler = StreamResampler(in_rate, out_rate)
    click = np.zeros(in_rate // 10, dtype="<i2")
    click[in_rate // 50] = 20000  # at 20 ms
    out = samples(run_chunks(resampler, click.tobytes()))
    peak_ms = np.argmax(np.abs(out)) / out_rate * 1000 - 20
    assert resampler.delay_ms <= 2.0 and abs(peak_ms - resampler.delay_ms) < 1000 / out_rate


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS_IN_USE)
def test_20ms_frames_give_the_one_shot_output(in_rate: int, out_rate: int) -> None:
    pcm = speech_like(0.5, in_rate)
    whole = StreamResampler(in_rate, out_rate).process(pcm)
    assert run_chunks(StreamResampler(in_rate, out_rate), pcm) == whole


HALF_BAND_PAIRS = [(8000, 16000), (16000, 8000), (24000, 48000), (48000, 24000)]
ODD_PAIRS = [(8000, 16000), (48000, 16000), (16000, 24000), (44100, 8000)]


@pytest.mark.parametrize(("in_rate", "out_rate"), ODD_PAIRS)
def test_chunks_of_any_length_give_the_one_shot_output(in_rate: int, out_rate: int) -> None:
    pcm = speech_like(0.3, in_rate)
    sizes = itertools.cycle([1, 7, 160, 33, 320, 2, 999])
    resampler, parts, i = StreamResampler(in_rate, out_rate), [], 0
    while i < len(pcm):
        size = 2 * next(sizes)
        parts.append(resampler.process(pcm[i : i + size]))
        i += size
    assert b"".join(parts) == StreamResampler(in_rate, out_rate).process(pcm)


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS_IN_USE)
def test_output_is_the_direct_form_filter_of_the_zero_stuffed_input(in_rate: int, out_rate: int) -> None:
    x = samples(speech_like(0.2, in_rate))
    d = design(in_rate, out_rate)
    stuffed = np.zeros(len(x) * d.up)
    stuffed[:: d.up] = x
    expected = np.convolve(stuffed, d.taps)[: len(stuffed)][:: d.down]
    out = samples(run_chunks(StreamResampler(in_rate, out_rate), speech_like(0.2, in_rate)))
    assert len(out) == len(expected) and np.abs(out - expected).max() <= 1.01  # float32, truncated


def test_a_round_trip_through_16khz_keeps_speech_like_noise_above_55_db_snr() -> None:
    pcm = speech_like(2.0, 8000)
    up, down = StreamResampler(8000, 16000), StreamResampler(16000, 8000)
    back = samples(run_chunks(down, run_chunks(up, pcm)))
    lag = round((up.delay_ms + down.delay_ms) * 8)  # a whole number of 8 kHz samples
    sent = samples(pcm)[: len(back) - lag]
    error = back[lag:] - sent
    assert 10 * np.log10(np.sum(sent**2) / np.sum(error**2)) > 55


def test_clipped_output_saturates_instead_of_wrapping() -> None:
    square = np.tile(np.r_[np.full(20, 32767), np.full(20, -32768)], 40).astype("<i2").tobytes()
    out = samples(run_chunks(StreamResampler(8000, 16000), square))
    steps = np.abs(np.diff(out))
    assert out.max() == 32767 and out.min() == -32768 and steps.max() < 40000


@pytest.mark.parametrize(("in_rate", "out_rate"), HALF_BAND_PAIRS)
def test_2x_designs_are_half_band_with_every_other_tap_zero(in_rate: int, out_rate: int) -> None:
    d = design(in_rate, out_rate)
    offsets = np.arange(len(d.taps)) - d.delay
    assert np.abs(d.taps[(offsets % 2 == 0) & (offsets != 0)]).max() < 1e-12
