"""G.711 and L16 codecs: round trips keep the signal, byte orders are honoured, bad lengths are refused."""

from __future__ import annotations

import numpy as np
import pytest

from app.media.codecs import MediaError, decode_to_pcm16, encode_from_pcm16
from app.media.formats import PCMA_8K, PCMU_8K, AudioFormat, Encoding, pcm16
from app.simulator.audio import speech_like


def snr_db(reference: bytes, received: bytes) -> float:
    x = np.frombuffer(reference, dtype="<i2").astype(np.float64)
    y = np.frombuffer(received, dtype="<i2").astype(np.float64)
    return 10 * np.log10(np.sum(x**2) / np.sum((x - y) ** 2))


@pytest.mark.parametrize("fmt", [PCMU_8K, PCMA_8K], ids=["pcmu", "pcma"])
def test_g711_round_trip_keeps_speech_level_audio_above_35_db_snr(fmt: AudioFormat) -> None:
    pcm = speech_like(1.0)
    encoded = encode_from_pcm16(pcm, fmt)
    assert len(encoded) == len(pcm) // 2
    assert snr_db(pcm, decode_to_pcm16(encoded, fmt)) > 35


def test_l16_little_endian_passes_through_unchanged() -> None:
    pcm = speech_like(0.1)
    assert encode_from_pcm16(pcm, pcm16(16000)) == pcm
    assert decode_to_pcm16(pcm, pcm16(16000)) == pcm


def test_l16_big_endian_is_byte_swapped_both_ways() -> None:
    big = AudioFormat(Encoding.L16, 16000, "big")
    pcm = np.array([1, -2, 300], dtype="<i2").tobytes()
    wire = encode_from_pcm16(pcm, big)
    assert wire == np.array([1, -2, 300], dtype=">i2").tobytes()
    assert decode_to_pcm16(wire, big) == pcm


def test_odd_length_l16_payload_is_refused() -> None:
    with pytest.raises(MediaError, match="odd length"):
        decode_to_pcm16(b"\x00\x01\x02", pcm16(8000))


def test_odd_length_pcm_cannot_be_encoded() -> None:
    with pytest.raises(MediaError):
        encode_from_pcm16(b"\x00", PCMU_8K)
