"""Running the app under uvicorn with a graceful drain on SIGTERM/SIGINT.

uvicorn's own handling closes the listening socket at the first signal, so nothing could answer during a
drain. Here the first signal starts `Services.drain` (readyz 503, new calls refused, live calls given
CALLBRIDGE_DRAIN_TIMEOUT to end, then ended) while the server keeps serving; uvicorn exits once the drain
is done. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator

import uvicorn

from app.loop_health import GcPauseTimer, LoopLagProbe, StallTracer, freeze_startup_objects
from app.services import Services

log = logging.getLogger(__name__)

#: The signals that start a drain (and, a second time, exit at once).
DRAIN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose shutdown signal drains the service's calls before it stops serving."""

    def __init__(self, config: uvicorn.Config, services: Services) -> None:
        super().__init__(config)
        self.services = services
        self._drain: asyncio.Task[None] | None = None
        self._gc_pauses = GcPauseTimer()
        self._lag_probe = LoopLagProbe()
        trace_ms = services.settings.stall_trace_ms
        self._stall_tracer = StallTracer(trace_ms / 1000) if trace_ms else None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start serving; then freeze what start-up built and start measuring the loop's stalls."""
        await super().startup(sockets)
        if self.should_exit:
            return
        frozen = freeze_startup_objects()
        loop = type(asyncio.get_running_loop())
        log.info("event loop %s.%s; start-up objects frozen: %d", loop.__module__, loop.__qualname__, frozen)
        self._gc_pauses.install()
        self._lag_probe.start()
        if self._stall_tracer is not None:
            self._stall_tracer.start()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._stall_tracer is not None:
            self._stall_tracer.stop()
        await self._lag_probe.stop()
        self._gc_pauses.remove()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's handlers stop serving at once: the drain's replace them while `serve` runs."""
        loop = asyncio.get_running_loop()
        for sig in DRAIN_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            yield
        finally:
            for sig in DRAIN_SIGNALS:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._drain is None:
            log.warning("%s: draining before shutdown", sig.name)
            self._drain = asyncio.create_task(self._drain_then_exit(), name="drain")
        else:
            log.warning("%s again: exiting now", sig.name)
            self.should_exit = self.force_exit = True

    async def _drain_then_exit(self) -> None:
        try:
            await self.services.drain(self.services.settings.drain_timeout)
        except Exception:
            log.exception("draining failed; shutting down")
        finally:
            self.should_exit = True
