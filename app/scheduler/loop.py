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

from app.errors import ProviderOutcomeUnknown, RetryLater, ServiceError
from app.metrics import BATCH_DIALS, BATCH_QUEUE_DEPTH, BATCH_UNKNOWN_DIALS
from app.providers.control import LegState
from app.scheduler.calling_hours import TimezoneRequired, hours_of
from app.scheduler.capacity import ServiceRoom, batch_room, dial_capacity
from app.scheduler.pacing import Pace
from app.scheduler.placing import Reconciliation, Settled, place_call, reconcile_call
from app.scheduler.retry import RetryPolicy
from app.scheduler.store import (
    Batch,
    BatchStore,
    Fates,
    LiveCount,
    RecordBatchEvent,
    ScheduledCall,
    ignore_batch_event,
)
from app.schemas.batches import DialState
from app.schemas.calls import EndReason, EventSeverity
from app.settings import Settings
from app.store.tables import CallRow, utcnow

if TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger(__name__)

#: Most calls one batch claims in one tick.
MAX_CLAIM = 100
#: How often the queue-depth gauge is counted again (a count over every running batch's calls).
QUEUE_DEPTH_EVERY_S = 5.0
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
        refusing_calls: Callable[[], bool] = lambda: False,
        owner: str | None = None,
        reconcile: Reconcile = cannot_reconcile,
        record: RecordBatchEvent = ignore_batch_event,
    ) -> None:
        self.settings = settings
        self.store = store
        self.place = place
        self.live_count = live_count
        self.leg_of = leg_of
        self.now = now
        #: True while the service takes no new calls (draining, or the cluster's Redis unreachable).
        self.refusing_calls = refusing_calls
        self.reconcile = reconcile
        self.record = record
        self._queue_counted: datetime | None = None
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
            refusing_calls=lambda: services.draining or not services.cluster.available,
            reconcile=functools.partial(reconcile_call, services),
            record=services.events.record_batch,
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
        """Tick every scheduler_interval from one tick's start to the next (a tick waits for its dials:
        sleeping a whole interval after it made a batch dial at most maxConcurrency per interval + tick)."""
        loop = asyncio.get_running_loop()
        interval = self.settings.scheduler_interval
        started = loop.time()
        while True:
            await asyncio.sleep(max(0.0, started + interval - loop.time()))
            started = loop.time()
            try:
                await self.tick()
            except Exception:
                log.exception("a scheduler tick failed; ticking on")

    async def tick(self) -> int:
        """One pass over the active batches; returns how many calls it placed (dialled or refused)."""
        if self.refusing_calls():
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
        await self._count_queue(batches, now)
        return placed

    async def _count_queue(self, batches: list[Batch], now: datetime) -> None:
        """Set the queue-depth gauge, at most every QUEUE_DEPTH_EVERY_S."""
        if (
            self._queue_counted is not None
            and (now - self._queue_counted).total_seconds() < QUEUE_DEPTH_EVERY_S
        ):
            return
        self._queue_counted = now
        for status, count in (await self.store.queue_depth([b.id for b in batches])).items():
            BATCH_QUEUE_DEPTH.labels(status).set(count)

    async def _run(self, batch: Batch, now: datetime, service_room: int | None) -> int:
        expired, ended = await self.store.expire_unstarted(batch.id, now)
        if expired:
            self.record(
                batch.id,
                "calls_expired",
                f"{expired} calls expired: the window ended before they were dialled",
                EventSeverity.WARNING,
                {"count": expired},
            )
        self._record_end(batch.id, ended)
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
        dials = scheduled.attempts  # as claimed: the store does not update the row in place
        if scheduled.dial_state == DialState.DIALLING:
            if not await self._settle(batch, scheduled, now):
                return
            dials -= 1  # that dial provably never went out: not_dialled uncounted it
        if await self._outside_hours(batch, scheduled, now, dials):
            return
        if not await self.store.mark_dialling(scheduled.id, self.owner):
            return  # the lease was lost: whoever holds it now dials
        done = self._placing[scheduled.id] = asyncio.Event()
        try:
            await self._place(batch, scheduled, now, dials)
        finally:
            done.set()
            del self._placing[scheduled.id]

    async def _outside_hours(self, batch: Batch, scheduled: ScheduledCall, now: datetime, dials: int) -> bool:
        """Put a call claimed outside its calling hours back until they open (no dial, no attempt)."""
        try:
            hours = hours_of(scheduled.spec, batch.calling_hours, batch.timezone)
        except TimezoneRequired as exc:  # the API refuses such calls: only a store changed by hand has one
            await self._refused(batch, scheduled, str(exc))
            return True
        if hours is None:
            return False
        opens = hours.opens_at(now)
        if opens == now:
            return False
        await self.store.retry_later(scheduled.id, opens, dials)
        self._pace(batch).give_back(1)
        self.record(
            batch.id,
            "outside_calling_hours",
            f"outside its calling hours ({hours.start:%H:%M}-{hours.end:%H:%M} {hours.zone.key}): "
            f"put back until {opens.isoformat()}",
            extras={"until": opens.isoformat()},
            scheduled_call_id=scheduled.id,
        )
        return True

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
        self.record(
            batch.id,
            "dial_reconciled",
            f"a dial its instance left unknown was reconciled with the provider: {settled.outcome.value} "
            f"({settled.detail})",
            EventSeverity.WARNING,
            {"outcome": settled.outcome.value},
            scheduled_call_id=scheduled.id,
            call_id=settled.call_id,
        )
        if settled.outcome is Settled.DIALLED:
            await self._finish(batch, scheduled, SUCCESS, created_call_id=settled.call_id)
            return False
        if settled.outcome is Settled.UNKNOWN:
            await self._finish(batch, scheduled, ERROR, error=f"{OUTCOME_UNKNOWN}: {settled.detail}")
            return False
        if batch.window_end is not None and now >= batch.window_end:
            await self._finish(
                batch, scheduled, EXPIRED, error="the batch's window ended before it was dialled"
            )
            return False
        return await self.store.not_dialled(scheduled.id, self.owner)

    async def _place(self, batch: Batch, scheduled: ScheduledCall, now: datetime, dials: int) -> None:
        """Place the call (its dial number `dials` + 1) and record how it went."""
        try:
            call_id = await self.place(batch, scheduled)
        except RetryLater as exc:  # a provider's 429, every call slot taken, a drain: not dialled
            wait_s = _retry_after_s(exc)
            if exc.code == PROVIDER_RATE_LIMITED:
                self._pace(batch).slow_down(now, wait_s)
            at = now + timedelta(seconds=wait_s)
            await self.store.retry_later(scheduled.id, at, dials)  # not dialled: not counted
            BATCH_DIALS.labels("put_back").inc()
            log.info("batch %s: call %s put back until %s (%s)", batch.id, scheduled.id, at, exc.code)
            self.record(
                batch.id,
                "call_put_back",
                f"not dialled ({exc.code}: {exc.detail}); put back until {at.isoformat()}"
                + (", the batch's pace halved" if exc.code == PROVIDER_RATE_LIMITED else ""),
                EventSeverity.WARNING if exc.code == PROVIDER_RATE_LIMITED else EventSeverity.INFO,
                {"code": exc.code, "until": at.isoformat()},
                scheduled_call_id=scheduled.id,
            )
        except ProviderOutcomeUnknown as exc:
            # The dial stays recorded `dialling`: once its lease ends it is claimed again and settled from
            # the provider's call list (as a crash's would be), never dialled twice.
            BATCH_DIALS.labels("unknown").inc()
            log.warning("batch %s: call %s, dial outcome unknown: %s", batch.id, scheduled.id, exc.detail)
            self.record(
                batch.id,
                "dial_outcome_unknown",
                f"the provider gave no clear answer ({exc.detail}); the dial is settled from its call list "
                "once the claim's lease ends",
                EventSeverity.WARNING,
                scheduled_call_id=scheduled.id,
            )
        except ServiceError as exc:
            await self._refused(batch, scheduled, exc.detail)
        except Exception as exc:
            log.exception("batch %s: placing call %s failed", batch.id, scheduled.id)
            await self._refused(batch, scheduled, f"callbridge could not place the call: {exc!r}")
        else:
            BATCH_DIALS.labels("dialled").inc()
            self.record(
                batch.id,
                "call_dialled",
                f"dialled (attempt {dials + 1})",
                extras={"attempt": dials + 1},
                scheduled_call_id=scheduled.id,
                call_id=call_id,
            )
            await self._finish(batch, scheduled, SUCCESS, created_call_id=call_id)

    async def _refused(self, batch: Batch, scheduled: ScheduledCall, reason: str) -> None:
        BATCH_DIALS.labels("refused").inc()
        self.record(batch.id, "call_failed", reason, EventSeverity.WARNING, scheduled_call_id=scheduled.id)
        await self._finish(batch, scheduled, ERROR, error=reason)

    async def _finish(
        self, batch: Batch, scheduled: ScheduledCall, status: str, **outcome: str | None
    ) -> None:
        """Record the scheduled call's fate (after its event: a `batch_ended` it causes comes last)."""
        self._record_end(batch.id, await self.store.finish(scheduled.id, status, **outcome))

    def _record_end(self, batch_id: str, fates: Fates | None) -> None:
        if fates is None:
            return
        summary = ", ".join(f"{count} {status}" for status, count in fates.items())
        self.record(batch_id, "batch_ended", f"batch ended, nothing left to dial: {summary}", extras=fates)

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
        at = self.now() + policy.backoff
        try:
            hours = hours_of(scheduled.spec, batch.calling_hours, batch.timezone)
        except TimezoneRequired:
            hours = None  # dialled once already: _outside_hours ends it when it comes due
        if hours is not None:
            at = hours.opens_at(at)
        await self.store.retry_later(scheduled.id, at, dials)
        self.record(
            batch.id,
            "call_retry_scheduled",
            f"not answered ({reason.value}); dial {dials + 1} of {policy.max_attempts} at {at.isoformat()}",
            extras={"attempt": dials + 1, "at": at.isoformat()},
            scheduled_call_id=scheduled.id,
            call_id=row.id,
        )
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
