"""Real-time pacing of outbound audio."""

from __future__ import annotations


class PlayoutClock:
    """Tracks how far ahead of real time the audio sent to the provider is.

    Sending at most `lead_ms` ahead keeps the provider's buffer small, so a barge-in `clear` drops little
    and the caller hears the agent stop at once, while the lead absorbs network and scheduling jitter.
    """

    def __init__(self, lead_ms: float) -> None:
        self.lead_s = lead_ms / 1000.0
        self._sent_until = 0.0  # monotonic time at which everything sent so far will have played

    def wait_before_sending(self, now: float) -> float:
        """Seconds to wait before the next frame may be sent (0 when it may go now)."""
        return max(0.0, self._sent_until - self.lead_s - now)

    def sent(self, now: float, duration_ms: float) -> None:
        """Account for `duration_ms` of audio sent at `now`."""
        self._sent_until = max(self._sent_until, now) + duration_ms / 1000.0

    def reset(self, now: float) -> None:
        """The provider's buffer was cleared: nothing is queued there any more."""
        self._sent_until = now

    def queued_ms(self, now: float) -> float:
        """Audio sent but (by the clock) not yet played."""
        return max(0.0, self._sent_until - now) * 1000.0
