"""The delivery loop: claims due outbox rows under a lease, POSTs them signed, and records the outcome.

Each instance runs one. Deliveries run concurrently (at most `MAX_IN_FLIGHT`), each bounded by its own
timeout, so a slow receiver holds only its own slots. A new row wakes the loop at once (`wake`); polling
every `POLL_S` picks up rows other instances wrote, and rows whose holder stopped without finishing.
A failed attempt is retried after `retry_delay` (the base doubling each time), `MAX_RETRIES` in all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import httpx

from app.store.tables import utcnow
from app.store.webhooks import Delivery, DeliveryRepository, WebhookRepository
from app.webhooks.signing import signed_headers

log = logging.getLogger(__name__)

MAX_RETRIES = 10
MAX_IN_FLIGHT = 32
POLL_S = 2.0
#: A claim outlasts the attempt's timeout by this much before another instance may take the row over.
LEASE_MARGIN_S = 30.0
#: How long `stop` waits for a claim under way to finish.
STOP_GRACE_S = 5.0


def retry_delay(failed_attempts: int, base_s: float) -> float | None:
    """Seconds until the next attempt after `failed_attempts` failures; None once the retries are spent."""
    if failed_attempts > MAX_RETRIES:
        return None
    return base_s * 2 ** (failed_attempts - 1)


class WebhookOutbox:
    """One instance's delivery loop over the shared outbox."""

    def __init__(
        self,
        deliveries: DeliveryRepository,
        webhooks: WebhookRepository,
        *,
        retry_base_s: float,
        timeout_s: float,
        clock: Callable[[], datetime] = utcnow,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self.deliveries = deliveries
        self.webhooks = webhooks
        self._retry_base_s = retry_base_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._max_in_flight = max_in_flight
        self._owner = f"outbox-{uuid.uuid4().hex[:12]}"
        self._wake = asyncio.Event()
        self._in_flight: dict[asyncio.Task[None], str] = {}
        self._loop: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self._stopping = False

    def wake(self) -> None:
        """Look for due rows now (a row was just written, or an attempt finished)."""
        self._wake.set()

    async def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=self._timeout_s, follow_redirects=False)
        self._loop = asyncio.create_task(self._run(), name="webhook-outbox")

    async def stop(self) -> None:
        """Stop the loop; attempts under way are abandoned and their rows released (due again at once)."""
        if self._loop is not None:
            # Not cancelled mid-claim: rows it leased would wait out their lease instead of being released.
            self._stopping = True
            self.wake()
            try:
                await asyncio.wait_for(self._loop, STOP_GRACE_S)
            except TimeoutError:
                log.warning("the webhook outbox did not stop within %g s", STOP_GRACE_S)
        interrupted = list(self._in_flight.values())
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        try:
            await self.deliveries.release(interrupted)
        except Exception:  # their leases expire instead
            log.exception("could not release %d webhook deliveries", len(interrupted))
        if self._http is not None:
            await self._http.aclose()

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                timeout = await self._claim_and_send()
            except Exception:
                log.exception("the webhook outbox could not claim deliveries; retrying")
                timeout = POLL_S
            if timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)

    async def _claim_and_send(self) -> float:
        """Start every due delivery there is room for; how long to wait before looking again."""
        free = self._max_in_flight - len(self._in_flight)
        now = self._clock()
        lease_s = self._timeout_s + LEASE_MARGIN_S
        claimed = await self.deliveries.claim_due(now, self._owner, lease_s, free)
        for delivery in claimed:
            task = asyncio.create_task(self._deliver(delivery), name=f"webhook-delivery-{delivery.id}")
            self._in_flight[task] = delivery.id
            task.add_done_callback(self._finished)
        if free <= 0:
            return POLL_S  # a finishing delivery wakes the loop
        if len(claimed) == free:
            return 0.0  # more may be due
        next_due = await self.deliveries.next_due(after=now)
        if next_due is None:
            return POLL_S
        return min(POLL_S, max(0.0, (next_due - self._clock()).total_seconds()))

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("a webhook delivery failed unexpectedly", exc_info=task.exception())
        self.wake()

    async def _deliver(self, delivery: Delivery) -> None:
        failure = await self._attempt(delivery)
        now = self._clock()
        if failure is None:
            await self.deliveries.mark_delivered(delivery.id, now)
        else:
            attempts = delivery.attempts + 1
            delay = retry_delay(attempts, self._retry_base_s)
            retry_at = None if delay is None else now + timedelta(seconds=delay)
            await self.deliveries.mark_failed_attempt(delivery.id, attempts, retry_at, failure)
            if retry_at is None:
                log.warning(
                    "webhook delivery %s (%s) gave up after %d attempts",
                    delivery.id,
                    delivery.event,
                    attempts,
                )
        if delivery.webhook_id is not None:
            await self.webhooks.record_outcome(delivery.webhook_id, failure, now)

    async def _attempt(self, delivery: Delivery) -> str | None:
        """POST the delivery once; None when the receiver took it (2xx), else why not (no secrets, no URL)."""
        assert self._http is not None
        headers = {"content-type": "application/json", **signed_headers(delivery.secrets, delivery.body)}
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._http.post(delivery.url, content=delivery.body, headers=headers)
        except TimeoutError:
            return f"no answer within {self._timeout_s:g} s"
        except httpx.HTTPError as exc:
            return f"could not be reached ({type(exc).__name__})"
        if 200 <= response.status_code < 300:
            return None
        return f"answered HTTP {response.status_code}"
