"""Cutting outbound audio into the wire's frames."""

from __future__ import annotations


class FrameSplitter:
    """Splits a byte stream into fixed-size frames, holding back the remainder until more arrives."""

    def __init__(self, frame_bytes: int) -> None:
        if frame_bytes <= 0:
            raise ValueError("frame size must be positive")
        self.frame_bytes = frame_bytes
        self._pending = bytearray()

    def push(self, data: bytes) -> list[bytes]:
        """Add audio; return every whole frame now available."""
        self._pending += data
        size = self.frame_bytes
        whole = len(self._pending) - len(self._pending) % size
        if not whole:
            return []
        frames = [bytes(self._pending[i : i + size]) for i in range(0, whole, size)]
        del self._pending[:whole]
        return frames

    def flush(self) -> bytes:
        """Return (and forget) the partial frame held back, if any."""
        rest = bytes(self._pending)
        self._pending.clear()
        return rest

    def clear(self) -> None:
        """Drop the partial frame (barge-in)."""
        self._pending.clear()

    @property
    def pending(self) -> int:
        return len(self._pending)
