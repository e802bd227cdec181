"""G.722 at 64 kbit/s (ITU-T G.722 mode 1) ↔ 16 kHz s16le PCM, streaming, on the `g722` package (libg722).

bench/g722_codecs.py chose it over PyAV's FFmpeg codec: several times faster per 20 ms frame (no frame
objects per call) with the same round-trip quality. Each direction keeps its own ADPCM state, so one
encoder and one decoder per call and direction: frames must go through them in order.
"""

from __future__ import annotations

import sys

from G722 import G722

from app.media.codecs import MediaError

SAMPLE_RATE = 16000
BIT_RATE = 64000
#: 20 ms: 320 samples in, 160 bytes out.
FRAME_SAMPLES = 320
FRAME_BYTES = 160

# libg722 takes native-endian int16; callbridge's PCM is little-endian.
_NATIVE_LITTLE = sys.byteorder == "little"


class G722Encoder:
    """16 kHz s16le PCM → G.722 bytes (one byte per two samples); state carries across calls."""

    def __init__(self) -> None:
        self._codec = G722(SAMPLE_RATE, BIT_RATE)
        self._pending = b""  # an odd trailing sample (2 bytes), encoded with the next call

    def encode(self, pcm: bytes) -> bytes:
        """Encode `pcm` (a whole number of samples); an odd last sample waits for the next call."""
        if len(pcm) % 2:
            raise MediaError(f"PCM buffer has an odd length ({len(pcm)} bytes)")
        data = self._pending + pcm if self._pending else pcm
        usable = len(data) - len(data) % 4
        self._pending = data[usable:]
        if not usable:
            return b""
        samples = memoryview(data)[:usable].cast("h")
        if not _NATIVE_LITTLE:
            samples = memoryview(_byteswap(bytes(samples))).cast("h")
        return self._codec.encode(samples)


class G722Decoder:
    """G.722 bytes → 16 kHz s16le PCM (two samples per byte); state carries across calls."""

    def __init__(self) -> None:
        self._codec = G722(SAMPLE_RATE, BIT_RATE)

    def decode(self, payload: bytes) -> bytes:
        """Decode one or more G.722 bytes (an RTP payload) to PCM."""
        if not payload:
            return b""
        pcm = self._codec.decode(payload).tobytes()
        return pcm if _NATIVE_LITTLE else _byteswap(pcm)


def _byteswap(pcm: bytes) -> bytes:
    swapped = bytearray(pcm)
    swapped[0::2], swapped[1::2] = pcm[1::2], pcm[0::2]
    return bytes(swapped)
