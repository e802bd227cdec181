"""In-band DTMF: synthesized tones decode after G.711, keep their timing and level; bad input is refused."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from app.media.codecs import decode_to_pcm16, encode_from_pcm16
from app.media.dtmf import DTMF_FREQUENCIES, MAX_LEVEL_DBFS, DtmfTiming, dtmf_tones, valid_dtmf_digits
from app.media.formats import PCMA_8K, PCMU_8K, AudioFormat, pcm16
from app.simulator.audio import speech_like
from tests.goertzel import detect_dtmf, tone_amplitude

ALL_DIGITS = "0123456789*#ABCD"
FULL_SCALE = 32767


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def over_the_wire(pcm: bytes, fmt: AudioFormat) -> bytes:
    return decode_to_pcm16(encode_from_pcm16(pcm, fmt), fmt)


def dbfs(amplitude: float) -> float:
    return 20 * math.log10(amplitude / FULL_SCALE)


@pytest.mark.parametrize("fmt", [PCMU_8K, PCMA_8K, pcm16(16000)], ids=["pcmu-8k", "pcma-8k", "l16-16k"])
def test_every_digit_decodes_after_a_trip_through_the_wire_codec(fmt: AudioFormat) -> None:
    pcm = dtmf_tones(ALL_DIGITS, fmt.sample_rate)
    assert detect_dtmf(over_the_wire(pcm, fmt), fmt.sample_rate) == ALL_DIGITS


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 24000, 32000, 44100, 48000])
def test_every_digit_decodes_at_any_supported_sample_rate(rate: int) -> None:
    assert detect_dtmf(dtmf_tones(ALL_DIGITS, rate), rate) == ALL_DIGITS


def test_default_timing_is_200_ms_of_tone_and_100_ms_of_silence_per_digit() -> None:
    assert len(dtmf_tones("12#", 8000)) == 3 * (1600 + 800) * 2


def test_silence_follows_every_tone_including_the_last() -> None:
    x = samples(dtmf_tones("12", 8000))
    assert np.all(x[1600:2400] == 0)
    assert np.all(x[4000:4800] == 0)
    assert np.count_nonzero(x[:1600]) > 1500


def test_back_to_back_calls_do_not_merge_their_digits() -> None:
    assert detect_dtmf(over_the_wire(dtmf_tones("1", 8000) + dtmf_tones("1", 8000), PCMU_8K), 8000) == "11"


@pytest.mark.parametrize("rate", [8000, 16000])
def test_custom_timing_sets_the_tone_and_gap_lengths(rate: int) -> None:
    pcm = dtmf_tones("12", rate, DtmfTiming(tone_ms=80, gap_ms=60))
    assert len(pcm) == 2 * (rate * 80 // 1000 + rate * 60 // 1000) * 2
    x = samples(pcm)
    assert np.all(x[rate * 80 // 1000 : rate * 140 // 1000] == 0)


def test_w_pauses_half_a_second_and_capital_w_a_whole_second() -> None:
    assert len(dtmf_tones("w", 8000)) == 4000 * 2
    assert len(dtmf_tones("W", 8000)) == 8000 * 2
    assert len(dtmf_tones("1w2W", 8000)) == (2 * 2400 + 4000 + 8000) * 2
    assert not any(dtmf_tones("wW", 8000))


def test_digits_around_a_pause_still_decode() -> None:
    assert detect_dtmf(over_the_wire(dtmf_tones("1w1W#", 8000), PCMU_8K), 8000) == "11#"


def test_repeated_digits_decode_as_separate_presses() -> None:
    assert detect_dtmf(over_the_wire(dtmf_tones("1111", 8000), PCMU_8K), 8000) == "1111"


@pytest.mark.parametrize("offset_ms", range(0, 20, 3))
def test_the_shortest_q24_timing_still_decodes_however_the_audio_is_aligned(offset_ms: int) -> None:
    digits = ALL_DIGITS + "1111"
    pcm = bytes(2 * 8 * offset_ms) + dtmf_tones(digits, 8000, DtmfTiming(tone_ms=40, gap_ms=40))
    assert detect_dtmf(over_the_wire(pcm, PCMU_8K), 8000) == digits


@pytest.mark.parametrize("rate", [8000, 48000])
def test_no_sample_reaches_full_scale(rate: int) -> None:
    assert np.max(np.abs(samples(dtmf_tones(ALL_DIGITS, rate)))) < FULL_SCALE


@pytest.mark.parametrize("level", [-10.0, -16.0])
@pytest.mark.parametrize("digit", ["1", "D"])
def test_each_tone_of_the_pair_sits_3_db_below_the_pair_level(level: float, digit: str) -> None:
    steady = [int(v) for v in samples(dtmf_tones(digit, 8000, level_dbfs=level))[40:1560]]
    for frequency in DTMF_FREQUENCIES[digit]:
        assert dbfs(tone_amplitude(steady, 8000, frequency)) == pytest.approx(level - 3.01, abs=0.2)


def test_the_pair_measures_at_its_level_re_a_full_scale_sine() -> None:
    steady = samples(dtmf_tones("5", 8000))[40:1560]
    rms = float(np.sqrt(np.mean(steady**2)))
    assert dbfs(rms * math.sqrt(2)) == pytest.approx(-10.0, abs=0.2)


def test_tones_fade_in_and_out_from_zero() -> None:
    x = np.abs(samples(dtmf_tones("D", 8000)))
    peak = np.max(x)
    assert x[0] == 0 and x[1599] == 0
    assert np.max(x[:8]) < 0.25 * peak and np.max(x[1592:1600]) < 0.25 * peak


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_the_fades_keep_the_spectrum_within_400_hz_of_the_tone_pair(rate: int) -> None:
    for digit, (low, high) in DTMF_FREQUENCIES.items():
        x = np.concatenate([np.zeros(rate // 10), samples(dtmf_tones(digit, rate))])
        power = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(len(x), 1 / rate)
        outside = power[(freqs < low - 400) | (freqs > high + 400)].sum()
        assert 10 * math.log10(outside / power.sum()) < -50, digit


def test_lower_case_a_to_d_are_the_upper_case_digits() -> None:
    assert valid_dtmf_digits("1a#bcdw") == "1A#BCDw"
    assert dtmf_tones("abcd", 8000) == dtmf_tones("ABCD", 8000)


def test_an_empty_string_is_no_audio() -> None:
    assert dtmf_tones("", 8000) == b""


@pytest.mark.parametrize("digits, bad", [("12x", "x"), ("1 2", " "), ("+1", "+"), ("e", "e"), ("9!", "!")])
def test_a_character_that_is_not_a_digit_or_pause_is_refused_by_name(digits: str, bad: str) -> None:
    message = re.escape(f"{bad!r} is not a DTMF digit: use 0-9, *, #, A-D, w or W")
    with pytest.raises(ValueError, match=message):
        valid_dtmf_digits(digits)
    with pytest.raises(ValueError, match=message):
        dtmf_tones(digits, 8000)


@pytest.mark.parametrize("timing", [{"tone_ms": 39}, {"gap_ms": 39}, {"tone_ms": 0, "gap_ms": 0}])
def test_timing_below_the_q24_minimum_is_refused(timing: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="at least 40 ms"):
        DtmfTiming(**timing)


def test_the_q24_minimum_timing_is_accepted() -> None:
    assert DtmfTiming(tone_ms=40, gap_ms=40) == DtmfTiming(40, 40)


@pytest.mark.parametrize("rate", [4000, 7999, 48001, 96000])
def test_a_sample_rate_outside_8_to_48_khz_is_refused(rate: int) -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        dtmf_tones("1", rate)


def test_a_level_loud_enough_to_clip_is_refused() -> None:
    assert np.max(np.abs(samples(dtmf_tones(ALL_DIGITS, 8000, level_dbfs=MAX_LEVEL_DBFS)))) <= FULL_SCALE
    with pytest.raises(ValueError, match="level_dbfs"):
        dtmf_tones("1", 8000, level_dbfs=-3.0)


def _sines(*frequencies: int, rate: int = 8000, seconds: float = 2.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    x = sum(6000 * np.sin(2 * np.pi * f * t) for f in frequencies)
    return np.asarray(x).astype("<i2").tobytes()


@pytest.mark.parametrize(
    "audio",
    [
        pytest.param(_sines(300, 2500), id="300+2500-hz"),
        pytest.param(_sines(697), id="lone-row-tone"),
        pytest.param(
            (np.random.default_rng(3).standard_normal(16000) * 6000).astype("<i2").tobytes(), id="white-noise"
        ),
        pytest.param(speech_like(5.0), id="speech-like"),
        pytest.param(bytes(16000), id="silence"),
    ],
)
def test_the_detector_hears_no_digits_in_audio_without_dtmf(audio: bytes) -> None:
    assert detect_dtmf(over_the_wire(audio, PCMU_8K), 8000) == ""
