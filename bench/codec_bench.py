"""What the codec benches share (g722_codecs.py, opus_codecs.py): one streaming encoder and decoder timed per
20 ms frame, the round trip's SNR on the speech-like signal and on a 1 kHz tone, and the table they print."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import bench_frames as bf
import numpy as np


class Codec(Protocol):
    name: str

    def encode(self, pcm: bytes) -> bytes: ...

    def decode(self, payload: bytes) -> bytes: ...


@dataclass(frozen=True)
class CodecResult:
    name: str
    encode_us: tuple[float, float]
    decode_us: tuple[float, float]
    bytes_per_frame: float
    snr_speech_db: float | None
    snr_tone_db: float | None


def round_trip_snr(make: Callable[[], Codec], signal: np.ndarray, rate: int, max_delay: int) -> float:
    """SNR of `signal` encoded and decoded in 20 ms frames by a fresh codec, its delay aligned."""
    codec = make()
    pcm = signal.astype("<i2").tobytes()
    size = rate * bf.FRAME_MS // 1000 * 2
    out = b"".join(codec.decode(codec.encode(pcm[i : i + size])) for i in range(0, len(pcm), size))
    return bf.snr_db(signal, np.frombuffer(out, "<i2"), max_delay)


def measure_codec(
    make: Callable[[], Codec],
    rate: int,
    frames: int,
    repeats: int,
    *,
    quality: bool = True,
    max_delay: int = 64,
) -> CodecResult:
    """µs per frame to encode and to decode (min, median), payload size, and (with `quality`) the SNRs."""
    pcm = bf.pcm_frames(rate)
    payloads = [make().encode(frame) for frame in pcm]
    codec = make()

    def encode(n: int) -> None:
        for i in range(n):
            codec.encode(pcm[i & bf.MASK])

    def decode(n: int) -> None:
        for i in range(n):
            codec.decode(payloads[i & bf.MASK])

    t = np.arange(int(bf.SECONDS * rate)) / rate
    tone = np.round(np.sin(2 * np.pi * 1000 * t) * 16000).astype(np.int16)
    return CodecResult(
        name=codec.name,
        encode_us=bf.time_per_frame(encode, frames, repeats),
        decode_us=bf.time_per_frame(decode, frames, repeats),
        bytes_per_frame=sum(map(len, payloads)) / len(payloads),
        snr_speech_db=round_trip_snr(make, bf.speech_like(rate), rate, max_delay) if quality else None,
        snr_tone_db=round_trip_snr(make, tone, rate, max_delay) if quality else None,
    )


def print_codec_table(results: list[CodecResult], name_width: int = 18) -> None:
    bf.note(
        "",
        f"{'codec':<{name_width}} {'encode µs min/med':>20} {'decode µs min/med':>20} {'bytes':>6}"
        f" {'SNR speech':>11} {'SNR 1 kHz':>10}",
    )
    for r in results:
        enc = f"{r.encode_us[0]:.1f} / {r.encode_us[1]:.1f}"
        dec = f"{r.decode_us[0]:.1f} / {r.decode_us[1]:.1f}"
        speech = f"{r.snr_speech_db:.1f} dB" if r.snr_speech_db is not None else "-"
        tone = f"{r.snr_tone_db:.1f} dB" if r.snr_tone_db is not None else "-"
        bf.note(
            f"{r.name:<{name_width}} {enc:>20} {dec:>20} {r.bytes_per_frame:>6.1f} {speech:>11} {tone:>10}"
        )
