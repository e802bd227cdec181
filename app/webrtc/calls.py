"""The webRtc calls running on this instance: each session runs in a task of its own, since the WHIP
request that starts it is answered at once (a WebSocket call's session runs in its socket's handler)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from app.calls.session import CallSession


class WebRtcSessions:
    """The tasks of the webRtc sessions running here; `stop` ends those left at shutdown."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._host_addresses = ""
        self._ready = False

    def start(self, host_addresses: str) -> None:
        """Offer ICE host candidates on `host_addresses` (CALLBRIDGE_WEBRTC_HOST_ADDRESSES) once the first
        offer comes (`ready`)."""
        self._host_addresses, self._ready = host_addresses, False

    def ready(self) -> None:
        """Before answering an offer: ICE is set up (aiortc and aioice load with the first webRtc call, so a
        server that never has one never loads them)."""
        if not self._ready:
            from app.webrtc.ice import parse_host_addresses, use_host_addresses

            use_host_addresses(parse_host_addresses(self._host_addresses))
            self._ready = True

    def __len__(self) -> int:
        return len(self._tasks)

    def run(self, session: CallSession, finished: Callable[[], None]) -> None:
        """Run `session` until its call ends; `finished` is called after (it releases the call)."""

        async def running() -> None:
            try:
                await session.run()
            finally:
                finished()

        task = asyncio.create_task(running(), name=f"webrtc-call-{session.call.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """End every session still running (each ends its call: `system_error`, server shutdown)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
