"""G.722 candidates for app/media/g722.py: `g722` (libg722) and PyAV (FFmpeg), µs per 20 ms frame and SNR.

Each codec runs as the call does: one streaming encoder and one decoder, 320-sample (640-byte) frames of
16 kHz s16le PCM in, 160-byte payloads out and back. The SNR is of the whole round trip, after aligning
the codec's delay, on the speech-like test signal and on a 1 kHz tone. PyAV is not a callbridge
dependency: without it (`pip install av`) its row is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version

import bench_frames as bf
import numpy as np
from codec_bench import Codec, measure_codec, print_codec_table
from G722 import G722

try:
    import av
    from av.audio.frame import AudioFrame
except ImportError:
    av = None

RATE = 16000


class Libg722:
    """`g722` (sippy/libg722): one object per direction."""

    name = "g722"

    def __init__(self) -> None:
        self._encoder = G722(RATE, 64000)
        self._decoder = G722(RATE, 64000)

    def encode(self, pcm: bytes) -> bytes:
        return self._encoder.encode(memoryview(pcm).cast("h"))

    def decode(self, payload: bytes) -> bytes:
        return self._decoder.decode(payload).tobytes()


class PyAv:
    """PyAV's FFmpeg `g722` codec contexts, one AudioFrame in and one Packet out per call."""

    name = "PyAV"

    def __init__(self) -> None:
        assert av is not None
        self._encoder = av.CodecContext.create("g722", "w")
        self._encoder.sample_rate = RATE
        self._encoder.format = "s16"
        self._encoder.layout = "mono"
        self._encoder.open()
        self._decoder = av.CodecContext.create("g722", "r")
        self._decoder.sample_rate = RATE
        self._decoder.layout = "mono"
        self._decoder.open()

    def encode(self, pcm: bytes) -> bytes:
        frame = AudioFrame.from_ndarray(np.frombuffer(pcm, "<i2").reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        return b"".join(bytes(packet) for packet in self._encoder.encode(frame))

    def decode(self, payload: bytes) -> bytes:
        frames = self._decoder.decode(av.Packet(payload))
        return b"".join(frame.to_ndarray().tobytes() for frame in frames)


def main() -> None:
    args = bf.bench_args(__doc__)
    av_version = av.__version__ if av is not None else "not installed"
    bf.print_machine(
        "G.722 64 kbit/s, 20 ms frames (320 samples ↔ 160 bytes)", g722=version("g722"), av=av_version
    )
    candidates: list[Callable[[], Codec]] = [Libg722] if av is None else [Libg722, PyAv]
    print_codec_table([measure_codec(make, RATE, args.frames, args.repeats) for make in candidates], 14)


if __name__ == "__main__":
    main()
