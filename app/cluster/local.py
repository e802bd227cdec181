"""In-process registry of the live call sessions this instance holds (the embedded default)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

S = TypeVar("S")


class LocalCallRegistry(Generic[S]):
    """`registry.CallRegistry` in one process: call id → live session.

    Claiming is atomic within the event loop (no await in between).
    """

    def __init__(self) -> None:
        self._sessions: dict[str, S] = {}

    def claim(self, call_id: str, session: S) -> bool:
        """Register `session` for `call_id`; False when another session already holds the call."""
        if call_id in self._sessions:
            return False
        self._sessions[call_id] = session
        return True

    def release(self, call_id: str, session: S) -> None:
        if self._sessions.get(call_id) is session:
            del self._sessions[call_id]

    def get(self, call_id: str) -> S | None:
        return self._sessions.get(call_id)

    def live(self) -> Iterator[S]:
        return iter(list(self._sessions.values()))

    def __len__(self) -> int:
        return len(self._sessions)
