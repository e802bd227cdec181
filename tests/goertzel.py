"""A small Goertzel DTMF detector for tests: decodes s16le PCM into the digits a receiver would hear.

Per block (20 ms by default, a new one every half block) it measures the power at the eight Q.23
frequencies. A block holds a digit when its strongest row and column tone each stand `DOMINANCE_DB` above
the other tones of their group, sit within `MAX_TWIST_DB` of each other, carry `MIN_TONE_FRACTION` of the
block's energy, and the block is louder than `MIN_LEVEL_DBFS`. A digit is reported once it fills
`MIN_BLOCKS` blocks in a row, and again only after a block with no digit (so "11" with a gap between
decodes as "11", a long "1" as one "1"). The half-block hop puts two whole blocks inside every tone and
every gap of the Q.24 minimum, 40 ms, however the audio is aligned.
"""

from __future__ import annotations

import math
import struct

ROWS = (697, 770, 852, 941)
COLUMNS = (1209, 1336, 1477, 1633)
KEYPAD = ("123A", "456B", "789C", "*0#D")

DOMINANCE_DB = 6.0  # strongest row (column) over the next strongest row (column)
MAX_TWIST_DB = 8.0  # row vs column tone power, either way
MIN_TONE_FRACTION = 0.5  # of the block's energy in the two tones
MIN_LEVEL_DBFS = -45.0  # block RMS (re a full-scale sine); quieter blocks are silence
MIN_BLOCKS = 2  # consecutive (half-overlapping) blocks a digit must fill before it is reported


def goertzel_power(samples: list[int], sample_rate: int, frequency: float) -> float:
    """|X(f)|^2 of `samples` at `frequency` (any frequency: the generalised Goertzel recurrence).

    A steady sine of amplitude A filling N samples gives about (A * N / 2) ** 2.
    """
    coeff = 2.0 * math.cos(2.0 * math.pi * frequency / sample_rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def tone_amplitude(samples: list[int], sample_rate: int, frequency: float) -> float:
    """Amplitude of the sine at `frequency` in `samples` (a steady tone filling them)."""
    return 2.0 * math.sqrt(max(goertzel_power(samples, sample_rate, frequency), 0.0)) / len(samples)


def _ratio_db(a: float, b: float) -> float:
    return 10.0 * math.log10(max(a, 1e-12) / max(b, 1e-12))


def classify_block(samples: list[int], sample_rate: int) -> str | None:
    """The digit one block holds, or None (silence, speech, noise, or an unclear tone pair)."""
    n = len(samples)
    energy = sum(x * x for x in samples)
    min_energy = n * (32767.0 * 10.0 ** (MIN_LEVEL_DBFS / 20.0)) ** 2 / 2.0
    if n == 0 or energy < min_energy:
        return None
    row_power = [goertzel_power(samples, sample_rate, f) for f in ROWS]
    col_power = [goertzel_power(samples, sample_rate, f) for f in COLUMNS]
    row = max(range(4), key=row_power.__getitem__)
    col = max(range(4), key=col_power.__getitem__)
    next_row = max(p for i, p in enumerate(row_power) if i != row)
    next_col = max(p for i, p in enumerate(col_power) if i != col)
    if (
        _ratio_db(row_power[row], next_row) < DOMINANCE_DB
        or _ratio_db(col_power[col], next_col) < DOMINANCE_DB
    ):
        return None
    if abs(_ratio_db(row_power[row], col_power[col])) > MAX_TWIST_DB:
        return None
    # A sine's Goertzel power is (A N / 2)^2 and its energy N A^2 / 2, so energy = 2 * power / N.
    tone_energy = 2.0 * (row_power[row] + col_power[col]) / n
    if tone_energy < MIN_TONE_FRACTION * energy:
        return None
    return KEYPAD[row][col]


def detect_dtmf(pcm16le: bytes, sample_rate: int, block_ms: int = 20) -> str:
    """The digits in `pcm16le` (mono s16le), in order; a trailing part block is ignored."""
    block = sample_rate * block_ms // 1000
    hop = block // 2
    count = len(pcm16le) // 2
    samples = struct.unpack(f"<{count}h", pcm16le[: 2 * count])
    digits: list[str] = []
    previous: str | None = None  # what the last block held
    streak = 0  # how many blocks in a row have held `previous`
    reported: str | None = None  # the digit sounding now, once reported; cleared by a digit-free block
    for start in range(0, count - block + 1, hop):
        digit = classify_block(list(samples[start : start + block]), sample_rate)
        streak = streak + 1 if digit == previous else 1
        previous = digit
        if digit is None:
            reported = None
        elif streak >= MIN_BLOCKS and digit != reported:
            digits.append(digit)
            reported = digit
    return "".join(digits)
