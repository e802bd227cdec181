"""Putting stream frames back in order when a provider does not guarantee it (Telnyx)."""

from __future__ import annotations

# Frames held while waiting for a missing one; past this the gap is given up (the audio is lost).
MAX_HELD_FRAMES = 3


class AudioReorderer:
    """Releases media payloads in `sequence_number` order.

    Every numbered frame (media or not) advances the expected number: non-media frames are delivered at once
    but recorded, so the gap they leave in the media numbering is not mistaken for lost audio. A frame from
    before what was already released (a late duplicate, or one given up on) is dropped. In-order traffic
    costs one comparison per frame.
    """

    def __init__(self) -> None:
        self._next: int | None = None
        self._held: dict[int, bytes] = {}  # sequence number → payload (b"" for a non-media frame)
        self._ready = b""  # audio a non-media frame unblocked, delivered with the next media frame
        self.late_dropped = 0
        self.gaps_skipped = 0

    def start(self, sequence: int | None) -> None:
        """The stream's `start`: numbering continues from it."""
        if sequence is not None:
            self._next = sequence + 1

    def media(self, sequence: int | None, payload: bytes) -> bytes | None:
        """Audio ready to play now (this frame plus any it unblocked), or None while held or dropped."""
        if sequence is None or self._next is None:
            return payload  # unnumbered stream: nothing to reorder by
        if sequence == self._next and not self._held and not self._ready:
            self._next += 1
            return payload
        if sequence < self._next:
            self.late_dropped += 1
            return None
        self._held[sequence] = payload
        out, self._ready = self._ready + self._release(), b""
        return out or None

    def other(self, sequence: int | None) -> None:
        """A numbered non-media frame went by (it is handled at once, in arrival order)."""
        if sequence is None or self._next is None or sequence < self._next:
            return
        if sequence == self._next and not self._held:
            self._next += 1
            return
        self._held[sequence] = b""
        self._ready += self._release()

    def _release(self) -> bytes:
        assert self._next is not None
        out = bytearray()
        while True:
            while self._next in self._held:
                out += self._held.pop(self._next)
                self._next += 1
            if out or len(self._held) <= MAX_HELD_FRAMES:
                return bytes(out)
            self.gaps_skipped += 1
            self._next = min(self._held)
