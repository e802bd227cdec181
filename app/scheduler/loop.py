"""The scheduler loop: every tick, each active batch expires what its window ended and dials what is due,
within its capacity and pace; each dial is recorded before the provider request and after its answer.

Exactly once: a call is claimed under a lease (CALLBRIDGE_BATCH_LEASE). A claim whose instance stopped
is taken again when its lease ends; if that instance had recorded the dial (`dialling`) but not its outcome,
the new holder reconciles it with the provider (`reconcile_call`) before anything is dialled again: a call the
provider has is recorded, a dial that provably never went out is made, and one the provider cannot settle
ends ERROR "outcome unknown" — never a second dial to the same person."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from app.errors import RetryLater, ServiceError
from app.metrics import BATCH_DIALS, BATCH_UNKNOWN_DIALS
from app.providers.control import LegState
from app.scheduler.capacity import ServiceRoom, batch_room, dial_capacity
from app.scheduler.pacing import Pace
from app.scheduler.placing import Reconciliation, Settled, place_call, reconcile_call
from app.scheduler.retry import RetryPolicy
from app.scheduler.store import Batch, BatchStore, LiveCount, ScheduledCall
from app.schemas.batches import DialState
from app.schemas.calls import EndReason
from app.settings import Settings
from app.store.tables import CallRow, utcnow

if TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger(__name__)

#: Most calls one batch claims in one tick.
MAX_CLAIM = 100
#: The error code a provider's 429 comes back as (app.calls.legs): the batch slows down.
PROVIDER_RATE_LIMITED = "provider_rate_limited"

SUCCESS, ERROR, EXPIRED = "SUCCESS", "ERROR", "EXPIRED"
OUTCOME_UNKNOWN = "outcome unknown"

#: Creates and dials a scheduled call's Call; returns its id.
PlaceCall = Callable[[Batch, ScheduledCall], Awaitable[str]]
#: Settles a dial a stopped instance left `dialling` (placing.reconcile_call).
Reconcile = Callable[[Batch, ScheduledCall], Awaitable[Reconciliation]]


async def cannot_reconcile(batch: Batch, scheduled: ScheduledCall) -> Reconciliation:
    """The reconciliation of a scheduler given none: nothing can settle an unknown dial."""
    return Reconciliation(Settled.UNKNOWN, "this scheduler cannot ask the provider")


#: The leg state a call ended with (read back from the store: the hook's row may predate it).
LegOf = Callable[[CallRow], Awaitable[LegState | None]]


class Scheduler:
    """Dials scheduled batches on this instance."""

    def __init__(
        self,
        settings: Settings,
        store: BatchStore,
        place: PlaceCall,
        live_count: LiveCount,
        leg_of: LegOf,
        *,
        now: Callable[[], datetime] = utcnow,
        draining: Callable[[], bool] = lambda: False,
        owner: str | None = None,
        reconcile: Reconcile = cannot_reconcile,
    ) -> None:
        self.settings = settings
        self.store = store
        self.place = place
        self.live_count = live_count
        self.leg_of = leg_of
        self.now = now
        self.draining = draining
        self.reconcile = reconcile
        self.owner = owner or f"{socket.gethostname()}:{uuid.uuid4()}"
        self.paces: dict[str, Pace] = {}
        #: Scheduled calls being placed now: a hook for their Call waits until the outcome is recorded.
        self._placing: dict[str, asyncio.Event] = {}
        self._hooks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, services: Services, **options: Any) -> Scheduler:
        """The scheduler of `services`, its retry policy hooked to the end of every call."""

        async def leg_of(row: CallRow) -> LegState | None:
            fresh = await services.calls_repo.get(row.id)
            return fresh.provider_status if fresh else row.provider_status

        scheduler = cls(
            services.settings,
            services.batches,
            functools.partial(place_call, services),
            services.calls_repo.live_count,
            leg_of,
            draining=lambda: services.draining,
            reconcile=functools.partial(reconcile_call, services),
            **options,
        )
        services.calls.ended_hooks.append(scheduler.call_ended)
        return scheduler

    # --- running ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Tick every CALLBRIDGE_SCHEDULER_INTERVAL in the background."""
        self._loop = asyncio.create_task(self._tick_forever(), name="batch-scheduler")

    async def stop(self) -> None:
        """Stop ticking (a tick under way is cancelled: its claims are retaken when their lease ends)."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        for task in list(self._hooks):
            task.cancel()
        await asyncio.gather(*self._hooks, return_exceptions=True)

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.scheduler_interval)
            try:
                await self.tick()
            except Exception:
                log.exception("a scheduler tick failed; ticking on")

    async def tick(self) -> int:
        """One pass over the active batches; returns how many calls it placed (dialled or refused)."""
        if self.draining():
            return 0
        now = self.now()
        batches = await self.store.active_batches(now)
        limit = self.settings.max_concurrent_calls
        service_live = await self.live_count() if limit else 0
        placed = 0
        for batch in batches:
            room = ServiceRoom(limit, self.settings.reserved_incoming_calls, service_live + placed).free()
            placed += await self._run(batch, now, room)
        self.paces = {b.id: self.paces[b.id] for b in batches if b.id in self.paces}
        return placed

    async def _run(self, batch: Batch, now: datetime, service_room: int | None) -> int:
        await self.store.expire_unstarted(batch.id, now)
        lease_s = self.settings.batch_lease
        if batch.window_end is not None and now >= batch.window_end:  # only unknown dials are left to settle
            unknown = await self.store.claim_due(
                batch.id, now, self.owner, lease_s, MAX_CLAIM, unknown_only=True
            )
            await asyncio.gather(*(self._dial(batch, scheduled, now) for scheduled in unknown))
            return 0
        pace = self._pace(batch)
        live = await self.store.live_calls(batch.id) if batch.max_concurrency is not None else 0
        wanted = dial_capacity(
            batch_room(batch.max_concurrency, live), service_room, pace.available(now), MAX_CLAIM
        )
        if wanted <= 0:
            return 0
        claimed = await self.store.claim_due(batch.id, now, self.owner, lease_s, wanted)
        pace.take(now, len(claimed))
        await asyncio.gather(*(self._dial(batch, scheduled, now) for scheduled in claimed))
        return len(claimed)

    def _pace(self, batch: Batch) -> Pace:
        rate = batch.calls_per_minute or self.settings.batch_calls_per_minute
        pace = self.paces.setdefault(batch.id, Pace(rate))
        pace.calls_per_minute = rate  # a PATCH may have changed it
        return pace

    # --- one dial -----------------------------------------------------------------------------

    async def _dial(self, batch: Batch, scheduled: ScheduledCall, now: datetime) -> None:
        """Record the dial, place the call, record its outcome (a 429 puts it back for later).

        A call claimed while `dialling` (its previous holder stopped mid-dial) is reconciled first."""
        if scheduled.dial_state == DialState.DIALLING and not await self._settle(batch, scheduled, now):
            return
        if not await self.store.mark_dialling(scheduled.id, self.owner):
            return  # the lease was lost: whoever holds it now dials
        done = self._placing[scheduled.id] = asyncio.Event()
        try:
            await self._place(batch, scheduled, now)
        finally:
            done.set()
            del self._placing[scheduled.id]

    async def _settle(self, batch: Batch, scheduled: ScheduledCall, now: datetime) -> bool:
        """Reconcile an unknown dial; True when it provably never went out and may be dialled now."""
        try:
            settled = await self.reconcile(batch, scheduled)
        except Exception as exc:
            log.exception("batch %s: reconciling call %s failed", batch.id, scheduled.id)
            settled = Reconciliation(Settled.UNKNOWN, f"callbridge could not reconcile it: {exc!r}")
        BATCH_UNKNOWN_DIALS.labels(settled.outcome.value).inc()
        log.warning(
            "batch %s: call %s, dial left unknown: %s (%s)",
            batch.id,
            scheduled.id,
            settled.outcome,
            settled.detail,
        )
        if settled.outcome is Settled.DIALLED:
            await self.store.finish(scheduled.id, SUCCESS, created_call_id=settled.call_id)
            return False
        if settled.outcome is Settled.UNKNOWN:
            await self.store.finish(scheduled.id, ERROR, error=f"{OUTCOME_UNKNOWN}: {settled.detail}")
            return False
        if batch.window_end is not None and now >= batch.window_end:
            await self.store.finish(
                scheduled.id, EXPIRED, error="the batch's window ended before it was dialled"
            )
            return False
        return await self.store.not_dialled(scheduled.id, self.owner)

    async def _place(self, batch: Batch, scheduled: ScheduledCall, now: datetime) -> None:
        try:
            call_id = await self.place(batch, scheduled)
        except RetryLater as exc:  # a provider's 429, every call slot taken, a drain: not dialled
            wait_s = _retry_after_s(exc)
            if exc.code == PROVIDER_RATE_LIMITED:
                self._pace(batch).slow_down(now, wait_s)
            at = now + timedelta(seconds=wait_s)
            await self.store.retry_later(scheduled.id, at, scheduled.attempts)
            BATCH_DIALS.labels("put_back").inc()
            log.info("batch %s: call %s put back until %s (%s)", batch.id, scheduled.id, at, exc.code)
        except ServiceError as exc:
            await self.store.finish(scheduled.id, ERROR, error=exc.detail)
            BATCH_DIALS.labels("refused").inc()
        except Exception as exc:
            log.exception("batch %s: placing call %s failed", batch.id, scheduled.id)
            reason = f"callbridge could not place the call: {exc!r}"
            await self.store.finish(scheduled.id, ERROR, error=reason)
            BATCH_DIALS.labels("refused").inc()
        else:
            await self.store.finish(scheduled.id, SUCCESS, created_call_id=call_id)
            BATCH_DIALS.labels("dialled").inc()

    # --- the retry policy -----------------------------------------------------------------------

    def call_ended(self, row: CallRow, reason: EndReason) -> None:
        """CallService ended hook: a batch's call that nobody answered may be dialled again."""
        scheduled_id = row.scheduled_call_id
        if scheduled_id is None or reason is not EndReason.UNJOINED:
            return
        task = asyncio.create_task(self.retry_if_due(row, reason), name=f"batch-retry-{scheduled_id}")
        self._hooks.add(task)
        task.add_done_callback(self._hooks.discard)

    async def retry_if_due(self, row: CallRow, reason: EndReason) -> bool:
        """Put the Call's scheduled call back (FUTURE at now + backoff) when its batch's policy says so."""
        scheduled_id = row.scheduled_call_id
        if scheduled_id is None:
            return False
        placing = self._placing.get(scheduled_id)
        if placing is not None:  # the call ended before its SUCCESS was recorded
            await placing.wait()
        scheduled = await self.store.get_call(scheduled_id)
        if scheduled is None or scheduled.status != SUCCESS or scheduled.call_id != row.id:
            return False  # not the latest dial of a placed call (a 429's, or already retried)
        batch = await self.store.get(scheduled_batch_agent(row), scheduled.batch_id)
        policy = RetryPolicy.from_json(batch.retry) if batch is not None else None
        if policy is None:
            return False
        dials = scheduled.attempts  # counted by mark_dialling, one per dial
        if not policy.wants_another(dials, reason, await self.leg_of(row)):
            return False
        await self.store.retry_later(scheduled.id, self.now() + policy.backoff, dials)
        return True


def scheduled_batch_agent(row: CallRow) -> str:
    """The agent of a batch's Call (batches are agent-scoped)."""
    if row.agent_id is None:
        raise ValueError(f"call {row.id} of a batch has no agent")
    return row.agent_id


def _retry_after_s(exc: RetryLater) -> float:
    try:
        return max(1.0, float(exc.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0
