"""`Handoff`: items from synchronous callbacks to one consumer task, without a wake-up when none is needed.

A media stream delivers ~50 messages a second per call, each through a callback (a protocol's
`data_received`, an agent's output). Queueing each one and waking the consumer task costs a task step per
message. A `Handoff` instead gives an item straight to a synchronous handler when the consumer is waiting
with nothing queued (so handling it now keeps the order exactly as queueing would); the handler deals with
it or passes back what the consumer should get instead. Everything else is queued in order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

#: Deals with an item at once and returns None, or returns what the consumer should get instead.
HandleNow = Callable[[T], T | None]


class Handoff(Generic[T]):
    """One consumer's inbox. `put` from callbacks on the loop thread, `get` from the consumer task."""

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._handle_now: HandleNow[T] | None = None
        self._failure: BaseException | None = None
        self._end: Callable[[], BaseException] | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def idle(self) -> bool:
        """The consumer waits in `get`, has not been woken, and nothing is queued."""
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._items

    def handle_now(self, handler: HandleNow[T] | None) -> None:
        """Give items to `handler` while the consumer waits with nothing queued (None: always queue).

        An exception from the handler is raised by the consumer's next `get`."""
        self._handle_now = handler

    def put(self, item: T) -> None:
        """Hand `item` over: at once when the consumer is idle and a handler takes it, else queued."""
        handler = self._handle_now
        if handler is not None and self.idle:
            try:
                rest = handler(item)
            except Exception as exc:  # the consumer's own failure: it raises it, the caller goes on
                self._failure = exc
                self._wake()
                return
            if rest is None:
                return
            item = rest
        self._items.append(item)
        self._wake()

    def end(self, error: Callable[[], BaseException]) -> None:
        """No more items: once the queued ones are taken, `get` raises `error()` (the first end holds)."""
        if self._end is None:
            self._end = error
        self._wake()

    async def get(self) -> T:
        """The next item; raises a handler's failure, or the end's error once nothing is queued."""
        while True:
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
            if self._items:
                return self._items.popleft()
            if self._end is not None:
                raise self._end()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
