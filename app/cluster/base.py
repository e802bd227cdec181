"""What every cluster implements: the call registry, control between instances, and whether new calls may
be taken (ARCHITECTURE §3.2, "several instances").

The embedded default (`local.LocalCluster`) is one process: every live call is here, control never leaves
it, and it is always available. `redis_cluster.RedisCluster` shares the same through Redis.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.cluster.registry import CallRegistry
from app.errors import Unavailable

#: `Retry-After` on calls refused while the cluster's shared state cannot be reached (s).
UNAVAILABLE_RETRY_AFTER_S = 5


@dataclass(frozen=True)
class ControlReply:
    """The answer of the instance that holds a call to a control request: an HTTP status and body."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


#: Acts on a call this instance holds: (call id, the request's JSON body) → the answer to send back.
ControlHandler = Callable[[str, bytes], Awaitable[ControlReply]]

#: Ends a call whose holder died: (call id, the holder's instance id).
OrphanHandler = Callable[[str, str], Awaitable[None]]


class Cluster(Protocol):
    """This instance's view of the service's instances."""

    #: Which live call sessions this instance holds.
    registry: CallRegistry[Any]
    #: This instance's id (unique across the cluster).
    instance_id: str

    @property
    def available(self) -> bool:
        """Whether new calls may be taken: False while the shared state cannot be reached."""
        ...

    async def start(self, control: ControlHandler, orphaned: OrphanHandler) -> None:
        """Start answering control requests for this instance's calls and ending dead instances' calls."""
        ...

    async def stop(self) -> None:
        """Leave the cluster (after the drain: this instance's calls have ended)."""
        ...

    async def forward(self, call_id: str, body: bytes) -> ControlReply | None:
        """Send a control request to the instance holding `call_id` and return its answer; None when no
        other instance holds it (act here). Raises `Unavailable` when the shared state cannot be reached."""
        ...


def cluster_unavailable() -> Unavailable:
    """The 503 for what needs the shared state (new calls, control of another instance's call) without it."""
    return Unavailable(
        "cluster_unavailable",
        "Redis (CALLBRIDGE_REDIS_URL) cannot be reached; try again shortly",
        retry_after_s=UNAVAILABLE_RETRY_AFTER_S,
    )
