"""Which live call sessions this service holds: the interface every registry implements.

The embedded default is `local.LocalCallRegistry` (one process); a shared one (Redis) implements the same
interface so that `calls/legs.py` and the API can find a call's session without knowing where it lives.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, TypeVar

S = TypeVar("S")


class CallRegistry(Protocol[S]):
    """call id → the live session holding it."""

    def claim(self, call_id: str, session: S) -> bool:
        """Register `session` for `call_id`; False when another session already holds the call."""
        ...

    def release(self, call_id: str, session: S) -> None:
        """Forget `session` (only if it is the one registered for `call_id`)."""
        ...

    def get(self, call_id: str) -> S | None:
        """The session holding `call_id` on this instance, if any."""
        ...

    def live(self) -> Iterator[S]:
        """Every session this instance holds (a snapshot: safe to end them while iterating)."""
        ...

    def __len__(self) -> int: ...
