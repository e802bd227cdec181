"""One instance on its own (the embedded default): the in-process call registry and cluster."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from app.cluster.base import ControlHandler, ControlReply, OrphanHandler

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


class LocalCluster:
    """`base.Cluster` for one instance: every call is held here and nothing needs forwarding."""

    instance_id = "local"
    available = True

    def __init__(self) -> None:
        self.registry: LocalCallRegistry[Any] = LocalCallRegistry()

    async def start(self, control: ControlHandler, orphaned: OrphanHandler) -> None:
        """Nothing to start: no other instance sends control or dies holding calls."""

    async def stop(self) -> None:
        """Nothing to leave."""

    async def forward(self, call_id: str, body: bytes) -> ControlReply | None:
        return None
