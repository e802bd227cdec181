"""The carrier's playback buffer: what a provider does with the audio, marks and clears it is sent."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class PlaybackBuffer:
    """Queues outbound audio and marks in order and plays them at real time, one tick at a time.

    Semantics of Twilio/Telnyx: a mark comes back when the audio queued before it has played (at once if
    nothing is queued); `clear` drops queued audio and returns every pending mark.
    """

    silence_byte: bytes
    _items: deque[bytes | str] = field(default_factory=deque)
    _offset: int = 0  # bytes already played of the audio item at the head

    def add_audio(self, audio: bytes) -> None:
        if audio:
            self._items.append(audio)

    def add_mark(self, name: str) -> list[str]:
        """Queue a mark; returns it at once when nothing is waiting to play before it."""
        if not self._items:
            return [name]
        self._items.append(name)
        return []

    def clear(self) -> list[str]:
        """Drop everything queued; returns the pending marks (in order)."""
        marks = [item for item in self._items if isinstance(item, str)]
        self._items.clear()
        self._offset = 0
        return marks

    def play(self, n_bytes: int) -> tuple[bytes, list[str], bool]:
        """Play `n_bytes`: (audio heard, padded with silence; marks reached; whether it ran short)."""
        out = bytearray()
        marks: list[str] = []
        while self._items and isinstance(self._items[0], str):
            marks.append(self._items.popleft())  # type: ignore[arg-type]
        while len(out) < n_bytes and self._items:
            head = self._items[0]
            if isinstance(head, str):
                marks.append(head)
                self._items.popleft()
                continue
            take = min(n_bytes - len(out), len(head) - self._offset)
            out += head[self._offset : self._offset + take]
            self._offset += take
            if self._offset == len(head):
                self._items.popleft()
                self._offset = 0
        while self._items and isinstance(self._items[0], str):
            marks.append(self._items.popleft())  # type: ignore[arg-type]
        short = len(out) < n_bytes
        out += self.silence_byte * (n_bytes - len(out))
        return bytes(out), marks, short
