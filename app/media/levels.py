"""Audio levels of a live call, for someone watching it (the console): RMS in dBFS over a short window.

Nothing here runs for a call nobody watches: the media path feeds a meter only while one is attached.
"""

from __future__ import annotations

import math

import numpy as np

#: Quieter than this (or no audio at all in the window) is reported as silence: None.
FLOOR_DBFS = -90.0
_FULL_SCALE = 32768.0


def dbfs(mean_square: float) -> float | None:
    """The level of 16-bit PCM whose samples' mean square is `mean_square`; None below FLOOR_DBFS."""
    if mean_square <= 0:
        return None
    level = 10 * math.log10(mean_square / (_FULL_SCALE * _FULL_SCALE))
    return round(level, 1) if level >= FLOOR_DBFS else None


class LevelMeter:
    """Accumulates 16-bit little-endian PCM; `take` gives the window's level and starts a new window."""

    __slots__ = ("_count", "_sum")

    def __init__(self) -> None:
        self._sum = 0.0
        self._count = 0

    def feed(self, pcm: bytes) -> None:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        self._sum += float(np.dot(samples, samples))
        self._count += samples.size

    def take(self) -> float | None:
        """dBFS of what was fed since the last take (None: silence, or nothing fed)."""
        level = dbfs(self._sum / self._count) if self._count else None
        self._sum, self._count = 0.0, 0
        return level


class CallLevels:
    """One watcher's meters of a call: the caller's audio (to the agent) and the agent's (to the caller)."""

    __slots__ = ("agent_to_caller", "caller_to_agent")

    def __init__(self) -> None:
        self.caller_to_agent = LevelMeter()
        self.agent_to_caller = LevelMeter()

    def take(self) -> dict[str, float | None]:
        """Both directions' levels over the window just ended (the wire names of the levels event)."""
        return {"callerToAgent": self.caller_to_agent.take(), "agentToCaller": self.agent_to_caller.take()}
