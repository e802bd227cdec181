"""Receive-side order of one RTP stream: a small reorder buffer; lost, late, duplicate and SSRC counts.

Sequence arithmetic follows RFC 3550 Appendix A.1: a jump of more than MAX_DROPOUT ahead or MAX_MISORDER
behind is taken as the sender restarting its numbering only when the next packet continues from it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from app.sip.rtp import RtpPacket

MAX_DROPOUT = 3000
MAX_MISORDER = 100
_RECENT = 64  # delivered sequence numbers remembered to tell a duplicate from a late packet


@dataclass
class SequenceStats:
    """What the buffer saw: packets skipped as lost, arriving after their turn, or twice; SSRC changes."""

    lost: int = 0
    late: int = 0
    duplicates: int = 0
    ssrc_changes: int = 0
    restarts: int = 0


def _delta(sequence: int, expected: int) -> int:
    """`sequence - expected` on the 16-bit circle, in -32768..32767."""
    return (sequence - expected + 0x8000) % 0x10000 - 0x8000


class ReorderBuffer:
    """Releases packets in sequence order, holding at most `depth` that arrived ahead of a missing one."""

    def __init__(self, depth: int = 3) -> None:
        self.depth = depth
        self.stats = SequenceStats()
        self._ssrc: int | None = None
        self._expected = 0
        self._held: dict[int, RtpPacket] = {}
        self._recent: deque[int] = deque(maxlen=_RECENT)
        self._bad_sequence: int | None = None

    @property
    def held(self) -> int:
        """Packets waiting for a missing predecessor."""
        return len(self._held)

    def push(self, packet: RtpPacket) -> list[RtpPacket]:
        """Take one packet; return the packets now ready, in order (often just this one)."""
        if packet.ssrc != self._ssrc:
            ready = self.flush()
            if self._ssrc is not None:
                self.stats.ssrc_changes += 1
            self._restart(packet)
            return [*ready, *self._release(packet)]
        delta = _delta(packet.sequence, self._expected)
        if delta == 0:
            return self._release(packet)
        if delta < 0:
            if -delta <= MAX_MISORDER or not self._confirms_restart(packet):
                if packet.sequence in self._recent:
                    self.stats.duplicates += 1
                else:
                    self.stats.late += 1
                return []
            return self._resync(packet)
        if delta > MAX_DROPOUT:
            return self._resync(packet) if self._confirms_restart(packet) else []
        if packet.sequence in self._held:
            self.stats.duplicates += 1
            return []
        self._held[packet.sequence] = packet
        if len(self._held) <= self.depth:
            return []
        return self._skip_to_oldest_held()

    def flush(self) -> list[RtpPacket]:
        """Give up on every missing packet: release all held ones in order (the wait timed out)."""
        ready: list[RtpPacket] = []
        while self._held:
            ready.extend(self._skip_to_oldest_held())
        return ready

    def _restart(self, packet: RtpPacket) -> None:
        self._ssrc = packet.ssrc
        self._expected = packet.sequence
        self._held.clear()
        self._recent.clear()
        self._bad_sequence = None

    def _confirms_restart(self, packet: RtpPacket) -> bool:
        """True when `packet` follows the previous out-of-range one (the sender renumbered)."""
        if packet.sequence == self._bad_sequence:
            return True
        self._bad_sequence = (packet.sequence + 1) & 0xFFFF
        return False

    def _resync(self, packet: RtpPacket) -> list[RtpPacket]:
        ready = self.flush()
        self.stats.restarts += 1
        self._restart(packet)
        return [*ready, *self._release(packet)]

    def _skip_to_oldest_held(self) -> list[RtpPacket]:
        oldest = min(self._held, key=lambda sequence: _delta(sequence, self._expected))
        self.stats.lost += _delta(oldest, self._expected)
        self._expected = oldest
        return self._release(self._held.pop(oldest))

    def _release(self, packet: RtpPacket) -> list[RtpPacket]:
        """Deliver `packet` (the expected one) and every held packet that now follows in order."""
        ready = [packet]
        self._recent.append(packet.sequence)
        self._expected = (packet.sequence + 1) & 0xFFFF
        while (following := self._held.pop(self._expected, None)) is not None:
            ready.append(following)
            self._recent.append(following.sequence)
            self._expected = (following.sequence + 1) & 0xFFFF
        return ready
