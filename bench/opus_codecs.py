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
from importlib.metadata import version

import bench_frames as bf
import numpy as np
from codec_bench import Codec, measure_codec, print_codec_table

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
    results = [
        measure_codec(
            make, SAMPLE_RATE, args.frames, args.repeats, quality=quality, max_delay=MAX_DELAY_SAMPLES
        )
        for make, quality in candidates
    ]
    print_codec_table(results)


if __name__ == "__main__":
    main()
