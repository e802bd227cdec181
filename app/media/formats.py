"""Audio formats spoken on the wire and by pipelines."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

ByteOrder = Literal["little", "big"]


class Encoding(StrEnum):
    """Sample encodings callbridge understands."""

    PCMU = "pcmu"  # G.711 μ-law, 8 bits per sample
    PCMA = "pcma"  # G.711 A-law, 8 bits per sample
    L16 = "l16"  # linear 16-bit signed PCM


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """One mono audio format: encoding, sample rate and (for L16) byte order."""

    encoding: Encoding
    sample_rate: int
    byte_order: ByteOrder = "little"

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding is Encoding.L16 else 1

    def bytes_for_ms(self, ms: int) -> int:
        """Bytes that hold `ms` milliseconds of audio."""
        return self.sample_rate * ms // 1000 * self.bytes_per_sample

    def duration_ms(self, n_bytes: int) -> float:
        """Milliseconds of audio in `n_bytes`."""
        return n_bytes / self.bytes_per_sample / self.sample_rate * 1000.0

    def silence(self, n_bytes: int) -> bytes:
        """`n_bytes` of digital silence in this encoding."""
        return _SILENCE_BYTE[self.encoding] * n_bytes

    def __str__(self) -> str:
        order = f"/{self.byte_order}-endian" if self.encoding is Encoding.L16 else ""
        return f"{self.encoding.value.upper()} {self.sample_rate} Hz{order}"


_SILENCE_BYTE = {Encoding.PCMU: b"\xff", Encoding.PCMA: b"\xd5", Encoding.L16: b"\x00"}

PCMU_8K = AudioFormat(Encoding.PCMU, 8000)
PCMA_8K = AudioFormat(Encoding.PCMA, 8000)


def pcm16(sample_rate: int) -> AudioFormat:
    """Little-endian linear PCM at `sample_rate` (the format pipelines compute in)."""
    return AudioFormat(Encoding.L16, sample_rate, "little")
