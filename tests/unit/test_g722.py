"""G.722 64 kbit/s streaming codec: 16 kHz s16le PCM ↔ 160-byte payloads per 20 ms."""

from __future__ import annotations

import numpy as np
import pytest

from app.media.codecs import MediaError
from app.media.g722 import FRAME_BYTES, FRAME_SAMPLES, SAMPLE_RATE, G722Decoder, G722Encoder

MAX_DELAY = 64  # samples of codec delay searched when comparing a round trip with its input


def tone(hz: float, seconds: float = 1.0, amplitude: int = 12000) -> np.ndarray:
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    return np.round(amplitude * np.sin(2 * np.pi * hz * t)).astype("<i2")


def frames(signal: np.ndarray) -> list[bytes]:
    data = signal.tobytes()
    size = 2 * FRAME_SAMPLES
    return [data[i : i + size] for i in range(0, len(data), size)]


def snr_db(reference: np.ndarray, decoded: np.ndarray) -> float:
    x, y = reference.astype(np.float64), decoded.astype(np.float64)
    n = min(len(x), len(y)) - MAX_DELAY
    delay = max(range(MAX_DELAY), key=lambda d: float(np.dot(x[:n], y[d : d + n])))
    error = x[:n] - y[delay : delay + n]
    return float(10 * np.log10(np.sum(x[:n] ** 2) / np.sum(error**2)))


def round_trip(chunks: list[bytes]) -> np.ndarray:
    encoder, decoder = G722Encoder(), G722Decoder()
    return np.frombuffer(b"".join(decoder.decode(encoder.encode(c)) for c in chunks), "<i2")


def test_a_20_ms_frame_encodes_to_160_bytes() -> None:
    assert len(G722Encoder().encode(frames(tone(1000))[0])) == FRAME_BYTES


def test_160_bytes_decode_to_20_ms_of_pcm() -> None:
    assert len(G722Decoder().decode(bytes(FRAME_BYTES))) == 2 * FRAME_SAMPLES


def test_a_1_khz_tone_survives_the_round_trip_above_20_db() -> None:
    signal = tone(1000)

    assert snr_db(signal, round_trip(frames(signal))) > 20


def test_the_codec_state_carries_across_frames() -> None:
    chunks = frames(tone(1000))
    whole = np.frombuffer(G722Decoder().decode(G722Encoder().encode(b"".join(chunks))), "<i2")
    fresh_per_frame = np.frombuffer(
        b"".join(G722Decoder().decode(G722Encoder().encode(c)) for c in chunks), "<i2"
    )

    assert np.array_equal(round_trip(chunks), whole)
    assert not np.array_equal(fresh_per_frame, whole)


def test_an_odd_sample_waits_for_the_next_call() -> None:
    signal = tone(1000, seconds=0.1)
    data = signal.tobytes()
    encoder = G722Encoder()
    split = encoder.encode(data[:642]) + encoder.encode(data[642:])

    assert split == G722Encoder().encode(data)


def test_pcm_with_an_odd_byte_count_is_refused() -> None:
    with pytest.raises(MediaError, match="odd length"):
        G722Encoder().encode(b"\x00\x00\x00")


def test_an_empty_payload_decodes_to_nothing() -> None:
    assert G722Decoder().decode(b"") == b""
