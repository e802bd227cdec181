"""A bridged transfer's payload relay: the same codec passes as is, different ones go through PCM."""

from __future__ import annotations

import numpy as np

from app.media.codecs import decode_to_pcm16, encode_from_pcm16
from app.media.formats import PCMA_8K, PCMU_8K
from app.media.g722 import G722Decoder, G722Encoder
from app.sip.bridge import PayloadRelay

FRAME_SAMPLES_8K = 160  # 20 ms


def tone(rate: int, ms: int, hz: float = 440.0) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * hz * t) * 8000).astype("<i2").tobytes()


def test_the_same_codec_is_relayed_byte_for_byte() -> None:
    relay = PayloadRelay("PCMU", "PCMU")
    payload = bytes(range(160))
    assert relay.passthrough and relay.packets(payload) == [payload]


def test_pcmu_to_pcma_is_transcoded_packet_for_packet() -> None:
    relay = PayloadRelay("PCMU", "PCMA")
    pcm = tone(8000, 20)
    [packet] = relay.packets(encode_from_pcm16(pcm, PCMU_8K))
    assert len(packet) == FRAME_SAMPLES_8K
    back = np.frombuffer(decode_to_pcm16(packet, PCMA_8K), "<i2").astype(float)
    sent = np.frombuffer(pcm, "<i2").astype(float)
    assert np.corrcoef(back, sent)[0, 1] > 0.99


def test_g722_to_pcmu_comes_out_in_20_ms_pcmu_packets_that_keep_the_tone() -> None:
    relay = PayloadRelay("G722", "PCMU")
    encoder = G722Encoder()
    pcm16k = tone(16000, 400)
    frame = 16000 * 2 * 20 // 1000
    out = [
        p for i in range(0, len(pcm16k), frame) for p in relay.packets(encoder.encode(pcm16k[i : i + frame]))
    ]
    assert out and all(len(packet) == FRAME_SAMPLES_8K for packet in out)
    heard = np.frombuffer(b"".join(decode_to_pcm16(p, PCMU_8K) for p in out), "<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(heard[-1600:]))
    assert abs(np.argmax(spectrum) * 8000 / 1600 - 440) <= 10


def test_pcmu_to_g722_comes_out_as_g722_packets() -> None:
    relay = PayloadRelay("PCMU", "G722")
    out = [p for _ in range(20) for p in relay.packets(encode_from_pcm16(tone(8000, 20), PCMU_8K))]
    assert out and all(len(packet) == 160 for packet in out)  # G.722: 64 kbit/s, 20 ms = 160 bytes
    decoded = G722Decoder().decode(b"".join(out))
    assert np.abs(np.frombuffer(decoded, "<i2")).max() > 1000
