"""Is the caller speaking? A frame-energy detector, enough for the bridge's own turn timing.

The bridge needs to know only whether the caller has said anything (user-first fallback) and when they last
did (inactivity messages); the agent runs its own, better VAD for turn-taking.
"""

from __future__ import annotations

import math
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

#: Frames louder than this (dB below full scale) count as voiced; line noise and comfort noise sit lower.
SPEECH_THRESHOLD_DBFS = -40.0
#: Voiced audio for this long in a row is speech (clicks and pops are shorter).
MIN_SPEECH_MS = 60.0


class VoiceActivity:
    """Feed caller PCM16 frames; `speaking` turns True after `MIN_SPEECH_MS` of voiced audio in a row."""

    def __init__(
        self, threshold_dbfs: float = SPEECH_THRESHOLD_DBFS, min_speech_ms: float = MIN_SPEECH_MS
    ) -> None:
        self._threshold = 32768.0 * math.pow(10.0, threshold_dbfs / 20.0)
        self._min_speech_ms = min_speech_ms
        self._voiced_ms = 0.0

    def feed(self, pcm16: bytes, duration_ms: float) -> bool:
        """True when this frame ends a run of speech long enough to count (the caller is speaking)."""
        if audioop.rms(pcm16, 2) >= self._threshold:
            self._voiced_ms += duration_ms
        else:
            self._voiced_ms = 0.0
        return self._voiced_ms >= self._min_speech_ms
