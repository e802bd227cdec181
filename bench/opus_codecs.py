"""Opus candidates for app/media/opus.py: `opuslib-next` (ctypes to Debian's libopus0) and PyAV (FFmpeg's
libopus), µs per 20 ms frame to encode and to decode, and round-trip SNR.

Each codec runs as a call does: one streaming encoder and one decoder, 320-sample (640-byte) frames of
16 kHz s16le mono PCM in (the rate the call pipeline runs Opus at, as for G.722), 32 kbit/s VoIP mode, one
packet out per frame and back to 16 kHz PCM. opuslib-next's row is callbridge's own OpusEncoder and
OpusDecoder (libopus resamples to 16 kHz itself). PyAV's libopus decoder only gives 48 kHz: its row
includes PyAV's own resampler back to 16 kHz, and a second row shows the decode without it. Opus is a
perceptual codec: the waveform SNR is low by design and says only that the audio came back. PyAV is not a
callbridge dependency: without it (`pip install av`) its rows are skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version

import bench_frames as bf
import numpy as np

from app.media.opus import BITRATE, SAMPLE_RATE, OpusDecoder, OpusEncoder

try:
    import av
    from av.audio.frame import AudioFrame
    from av.audio.resampler import AudioResampler
except ImportError:
    av = None

#: The Opus encoder's look-ahead plus decoder delay fits in 20 ms at 16 kHz.
MAX_DELAY_SAMPLES = 320


class OpuslibNext:
    """callbridge's OpusEncoder / OpusDecoder (app/media/opus.py, on opuslib-next)."""

    name = "opuslib-next"

    def __init__(self) -> None:
        self._encoder = OpusEncoder()
        self._decoder = OpusDecoder()

    def encode(self, pcm: bytes) -> bytes:
        return self._encoder.encode(pcm)

    def decode(self, payload: bytes) -> bytes:
        return self._decoder.decode(payload)


class PyAv:
    """PyAV's `libopus` codec contexts: one AudioFrame in, one Packet out; 48 kHz frames back, resampled
    to 16 kHz by PyAV's AudioResampler unless `resample` is off."""

    def __init__(self, resample: bool = True) -> None:
        assert av is not None
        self.name = "PyAV" if resample else "PyAV, 48 kHz out"
        self._encoder = av.CodecContext.create("libopus", "w")
        self._encoder.sample_rate = SAMPLE_RATE
        self._encoder.format = "s16"
        self._encoder.layout = "mono"
        self._encoder.bit_rate = BITRATE
        self._encoder.options = {"application": "voip", "frame_duration": "20"}
        self._encoder.open()
        self._decoder = av.CodecContext.create("libopus", "r")
        self._decoder.layout = "mono"
        self._decoder.open()
        self._resampler = AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE) if resample else None

    def encode(self, pcm: bytes) -> bytes:
        frame = AudioFrame.from_ndarray(np.frombuffer(pcm, "<i2").reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        return b"".join(bytes(packet) for packet in self._encoder.encode(frame))

    def decode(self, payload: bytes) -> bytes:
        frames = self._decoder.decode(av.Packet(payload))
        if self._resampler is None:
            return b"".join(frame.to_ndarray().tobytes() for frame in frames)
        return b"".join(
            out.to_ndarray().tobytes() for frame in frames for out in self._resampler.resample(frame)
        )


Codec = OpuslibNext | PyAv


@dataclass(frozen=True)
class Result:
    name: str
    encode_us: tuple[float, float]
    decode_us: tuple[float, float]
    bytes_per_frame: float
    snr_speech_db: float | None
    snr_tone_db: float | None


def round_trip(make: Callable[[], Codec], signal: np.ndarray) -> float:
    codec = make()
    pcm = signal.astype("<i2").tobytes()
    size = SAMPLE_RATE * bf.FRAME_MS // 1000 * 2
    out = b"".join(codec.decode(codec.encode(pcm[i : i + size])) for i in range(0, len(pcm), size))
    return bf.snr_db(signal, np.frombuffer(out, "<i2"), MAX_DELAY_SAMPLES)


def measure(make: Callable[[], Codec], frames: int, repeats: int, quality: bool) -> Result:
    pcm = bf.pcm_frames(SAMPLE_RATE)
    encoder = make()
    payloads = [encoder.encode(frame) for frame in pcm]
    codec = make()

    def encode(n: int) -> None:
        for i in range(n):
            codec.encode(pcm[i & bf.MASK])

    def decode(n: int) -> None:
        for i in range(n):
            codec.decode(payloads[i & bf.MASK])

    t = np.arange(int(bf.SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    tone = np.round(np.sin(2 * np.pi * 1000 * t) * 16000).astype(np.int16)
    return Result(
        name=codec.name,
        encode_us=bf.time_per_frame(encode, frames, repeats),
        decode_us=bf.time_per_frame(decode, frames, repeats),
        bytes_per_frame=sum(map(len, payloads)) / len(payloads),
        snr_speech_db=round_trip(make, bf.speech_like(SAMPLE_RATE)) if quality else None,
        snr_tone_db=round_trip(make, tone) if quality else None,
    )


def main() -> None:
    args = bf.bench_args(__doc__)
    av_version = av.__version__ if av is not None else "not installed"
    bf.print_machine(
        f"Opus {BITRATE // 1000} kbit/s VoIP, 20 ms frames of 16 kHz mono (320 samples)",
        opuslib_next=version("opuslib-next"),
        av=av_version,
    )
    candidates: list[tuple[Callable[[], Codec], bool]] = [(OpuslibNext, True)]
    if av is not None:
        candidates += [(PyAv, True), (lambda: PyAv(resample=False), False)]
    results = [measure(make, args.frames, args.repeats, quality) for make, quality in candidates]
    bf.note(
        "",
        f"{'codec':<18} {'encode µs min/med':>20} {'decode µs min/med':>20} {'bytes':>6}"
        f" {'SNR speech':>11} {'SNR 1 kHz':>10}",
    )
    for r in results:
        enc = f"{r.encode_us[0]:.1f} / {r.encode_us[1]:.1f}"
        dec = f"{r.decode_us[0]:.1f} / {r.decode_us[1]:.1f}"
        speech = f"{r.snr_speech_db:.1f} dB" if r.snr_speech_db is not None else "-"
        tone = f"{r.snr_tone_db:.1f} dB" if r.snr_tone_db is not None else "-"
        bf.note(f"{r.name:<18} {enc:>20} {dec:>20} {r.bytes_per_frame:>6.1f} {speech:>11} {tone:>10}")


if __name__ == "__main__":
    main()
