"""Opus (RFC 7587) for SIP calls: 16 kHz mono PCM ↔ one packet per 20 ms, shaped by the far end's fmtp."""

from __future__ import annotations

import numpy as np
import pytest

from app.media.codecs import MediaError
from app.media.opus import FRAME_SAMPLES, SAMPLE_RATE, OpusDecoder, OpusEncoder, OpusFmtp

pytestmark = pytest.mark.needs_opus

#: Samples of codec delay searched when comparing a round trip with its input (look-ahead + decoder).
MAX_DELAY = 320


def tone(hz: float, seconds: float = 1.0, amplitude: int = 12000) -> np.ndarray:
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    return np.round(amplitude * np.sin(2 * np.pi * hz * t)).astype("<i2")


def frames(signal: np.ndarray) -> list[bytes]:
    data = signal.tobytes()
    size = 2 * FRAME_SAMPLES
    return [data[i : i + size] for i in range(0, len(data) - size + 1, size)]


def round_trip(signal: np.ndarray, far_end: OpusFmtp | None = None) -> np.ndarray:
    encoder, decoder = OpusEncoder(far_end or OpusFmtp()), OpusDecoder()
    return np.frombuffer(b"".join(decoder.decode(encoder.encode(f)) for f in frames(signal)), "<i2")


def snr_db(reference: np.ndarray, decoded: np.ndarray) -> float:
    x, y = reference.astype(np.float64), decoded.astype(np.float64)
    n = min(len(x), len(y)) - MAX_DELAY
    delay = max(range(MAX_DELAY), key=lambda d: float(np.dot(x[:n], y[d : d + n])))
    error = x[:n] - y[delay : delay + n]
    return float(10 * np.log10(np.sum(x[:n] ** 2) / np.sum(error**2)))


def rms(signal: np.ndarray) -> float:
    return float(np.sqrt(np.mean(signal.astype(np.float64) ** 2)))


def test_20_ms_of_pcm_encodes_to_one_packet_that_decodes_to_20_ms() -> None:
    packet = OpusEncoder().encode(frames(tone(1000))[0])
    assert 0 < len(packet) < 2 * FRAME_SAMPLES
    assert len(OpusDecoder().decode(packet)) == 2 * FRAME_SAMPLES


def test_a_1_khz_tone_survives_the_round_trip_above_15_db() -> None:
    signal = tone(1000)
    assert snr_db(signal, round_trip(signal)) > 15


def test_a_far_end_playing_at_8_khz_gets_no_audio_above_4_khz() -> None:
    signal = tone(6000)
    assert rms(round_trip(signal)[MAX_DELAY:]) > rms(signal) / 2  # wideband by default: 6 kHz passes
    assert rms(round_trip(signal, OpusFmtp(max_playback_rate=8000))[MAX_DELAY:]) < rms(signal) / 20


def test_pcm_that_is_no_opus_frame_is_refused() -> None:
    with pytest.raises(MediaError, match="not 630 bytes"):
        OpusEncoder().encode(bytes(630))


@pytest.mark.parametrize("payload", [b"", b"\xff\xff\xff"], ids=["empty", "corrupt"])
def test_an_empty_or_corrupt_packet_is_concealed_as_20_ms(payload: bytes) -> None:
    assert len(OpusDecoder().decode(payload)) == 2 * FRAME_SAMPLES


def test_fmtp_parameters_are_read() -> None:
    assert OpusFmtp.parse("maxplaybackrate=8000; useinbandfec=1;stereo=1") == OpusFmtp(8000, True, True)


@pytest.mark.parametrize("fmtp", [None, "", "maxplaybackrate=abc;useinbandfec=yes", "maxplaybackrate=100"])
def test_missing_or_malformed_fmtp_means_the_rfc_7587_defaults(fmtp: str | None) -> None:
    assert OpusFmtp.parse(fmtp) == OpusFmtp(max_playback_rate=48000, inband_fec=False, stereo=False)
