"""In-band DTMF: the ITU-T Q.23 tone pairs synthesized as s16le PCM, for carriers without an RFC 4733 path.

Levels are in dBFS after AES17 (a full-scale sine is 0 dBFS). `level_dbfs` is the level of the pair; each
tone sits 3 dB below it (-13 dBFS for the default -10), so the summed peaks stay under full scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

#: Q.23 (low, high) frequencies in Hz: rows 697/770/852/941, columns 1209/1336/1477/1633.
DTMF_FREQUENCIES: dict[str, tuple[int, int]] = {
    "1": (697, 1209),
    "2": (697, 1336),
    "3": (697, 1477),
    "A": (697, 1633),
    "4": (770, 1209),
    "5": (770, 1336),
    "6": (770, 1477),
    "B": (770, 1633),
    "7": (852, 1209),
    "8": (852, 1336),
    "9": (852, 1477),
    "C": (852, 1633),
    "*": (941, 1209),
    "0": (941, 1336),
    "#": (941, 1477),
    "D": (941, 1633),
}

#: Dial-string pauses (the Telnyx/Plivo convention): `w` waits half a second, `W` a whole second.
PAUSE_MS: dict[str, int] = {"w": 500, "W": 1000}

#: Q.24: receivers must accept tones and pauses this long, so shorter ones may go undetected.
MIN_TONE_MS = 40
MIN_GAP_MS = 40
#: Raised-cosine fade at each end of a tone: no click, and no splatter outside the tone pair.
RAMP_MS = 3.0
#: Supported sample rates (inclusive): the telephony and wideband rates callbridge speaks.
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 48000

_FULL_SCALE = 32767
_PAIR_SPLIT_DB = 10.0 * math.log10(2.0)  # each of two equal tones carries half the pair's power
#: The loudest pair whose two peaks, added, still fit in 16 bits.
MAX_LEVEL_DBFS = -_PAIR_SPLIT_DB
_VALID = "0-9, *, #, A-D, w or W"
_UPPER_ABCD = str.maketrans("abcd", "ABCD")


@dataclass(frozen=True)
class DtmfTiming:
    """How long each tone sounds and how long the silence after it lasts (Ultravox's 0.2 s / 0.1 s)."""

    tone_ms: int = 200
    gap_ms: int = 100

    def __post_init__(self) -> None:
        if self.tone_ms < MIN_TONE_MS:
            raise ValueError(f"DTMF tone_ms must be at least {MIN_TONE_MS} ms (Q.24), got {self.tone_ms}")
        if self.gap_ms < MIN_GAP_MS:
            raise ValueError(f"DTMF gap_ms must be at least {MIN_GAP_MS} ms (Q.24), got {self.gap_ms}")


DEFAULT_TIMING = DtmfTiming()


def valid_dtmf_digits(digits: str) -> str:
    """`digits` with a-d upper-cased (w and W are different pauses, so they keep their case).

    Raises ValueError naming the first character that is neither a digit nor a pause.
    """
    normalised = digits.translate(_UPPER_ABCD)
    for char in normalised:
        if char not in DTMF_FREQUENCIES and char not in PAUSE_MS:
            raise ValueError(f"{char!r} is not a DTMF digit: use {_VALID}")
    return normalised


def dtmf_tones(
    digits: str, sample_rate: int, timing: DtmfTiming = DEFAULT_TIMING, level_dbfs: float = -10.0
) -> bytes:
    """s16le mono PCM for `digits`: each tone then `timing.gap_ms` of silence (after the last one too)."""
    normalised = valid_dtmf_digits(digits)
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"sample_rate must be {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz, got {sample_rate}")
    if not level_dbfs <= MAX_LEVEL_DBFS:
        raise ValueError(f"level_dbfs must be at most {MAX_LEVEL_DBFS:.2f} (or it clips), got {level_dbfs}")
    gap = bytes(2 * _samples(timing.gap_ms, sample_rate))
    parts: list[bytes] = []
    for char in normalised:
        pause_ms = PAUSE_MS.get(char)
        if pause_ms is not None:
            parts.append(bytes(2 * _samples(pause_ms, sample_rate)))
        else:
            parts.append(_tone(char, sample_rate, timing.tone_ms, level_dbfs))
            parts.append(gap)
    return b"".join(parts)


def _samples(ms: float, sample_rate: int) -> int:
    return round(sample_rate * ms / 1000)


@lru_cache(maxsize=256)
def _tone(digit: str, sample_rate: int, tone_ms: int, level_dbfs: float) -> bytes:
    """One digit's tone pair, faded in and out: built once per (digit, rate, length, level)."""
    low, high = DTMF_FREQUENCIES[digit]
    amplitude = _FULL_SCALE * 10.0 ** ((level_dbfs - _PAIR_SPLIT_DB) / 20.0)
    t = np.arange(_samples(tone_ms, sample_rate)) / sample_rate
    values = amplitude * (np.sin(2.0 * np.pi * low * t) + np.sin(2.0 * np.pi * high * t))
    ramp = _samples(RAMP_MS, sample_rate)
    gain = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    values[:ramp] *= gain
    values[len(values) - ramp :] *= gain[::-1]
    return np.round(values).astype("<i2").tobytes()
