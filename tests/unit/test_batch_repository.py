"""BatchRepository on SQLite and PostgreSQL: claims under leases, fates, counts, large batches, calling hours
and the batch_ended event."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.metrics import REGISTRY
from app.schemas.call_definition import CallDefinition
from app.store.db import Database
from app.store.repositories import AgentRepository, BatchRepository, CallRepository
from app.store.secret_box import SecretBox
from app.store.tables import AgentRow, CallRow, ScheduledBatchRow

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
LEASE_S = 30.0
SPEC = {"medium": {"twilio": {"outgoing": {"to": "+15550001", "from": "+15550002"}}}, "templateContext": {}}


@pytest.fixture
async def agent_id(database: Database) -> str:
    row = AgentRow(id=str(uuid.uuid4()), name="batch", call_template={}, created=NOW, updated=NOW)
    await AgentRepository(database).add(row)
    return row.id


@pytest.fixture
def repository(database: Database) -> BatchRepository:
    return BatchRepository(database, SecretBox("batch-test-key"))


async def new_batch(
    repository: BatchRepository, agent_id: str, calls: int, **fields: object
) -> ScheduledBatchRow:
    row = ScheduledBatchRow(id=str(uuid.uuid4()), agent_id=agent_id, created=NOW, **fields)
    return await repository.create(row, (SPEC for _ in range(calls)))


async def test_a_created_batch_counts_its_calls_and_lists_them_in_order(
    repository: BatchRepository, agent_id: str
) -> None:
    batch = await new_batch(repository, agent_id, 3)
    assert (batch.total_count, batch.completed_count, batch.ended_at) == (3, 0, None)
    page = await repository.calls_page(batch.id, None, None, 10)
    assert [row.position for row in page.rows] == [0, 1, 2]
    assert {row.status for row in page.rows} == {"FUTURE"}
    assert page.rows[0].spec == SPEC


async def test_the_webhook_secret_is_sealed_at_rest_and_opens_back(
    repository: BatchRepository, agent_id: str
) -> None:
    batch = await new_batch(repository, agent_id, 1, webhook_secret="a-webhook-secret-of-ours")
    stored = await repository.get(agent_id, batch.id)
    assert stored is not None and "a-webhook-secret-of-ours" not in str(stored.webhook_secret)
    assert repository.webhook_secret(stored) == "a-webhook-secret-of-ours"


async def test_due_calls_are_claimed_once_and_become_pending(
    repository: BatchRepository, agent_id: str
) -> None:
    batch = await new_batch(repository, agent_id, 3)
    first = await repository.claim_due(batch.id, NOW, "a", LEASE_S, 2)
    second = await repository.claim_due(batch.id, NOW, "b", LEASE_S, 5)
    assert len(first) == 2 and len(second) == 1
    assert {row.status for row in first + second} == {"PENDING"}
    assert (second[0].lease_owner, second[0].lease_expires) == ("b", NOW + timedelta(seconds=LEASE_S))
    assert await repository.claim_due(batch.id, NOW, "c", LEASE_S, 5) == []


async def test_two_instances_racing_claim_each_call_once(database: Database, agent_id: str) -> None:
    one, other = BatchRepository(database), BatchRepository(database)
    batch = await new_batch(one, agent_id, 60)

    async def claim_all(repository: BatchRepository, owner: str) -> list[str]:
        claimed: list[str] = []
        while rows := await repository.claim_due(batch.id, NOW, owner, LEASE_S, 3):
            claimed += [row.id for row in rows]
        return claimed

    first, second = await asyncio.gather(claim_all(one, "one"), claim_all(other, "other"))
    assert len(first) + len(second) == 60
    assert len(set(first) | set(second)) == 60


async def test_calls_not_yet_due_are_not_claimed(repository: BatchRepository, agent_id: str) -> None:
    batch = await new_batch(repository, agent_id, 2, window_start=NOW + timedelta(minutes=5))
    assert await repository.claim_due(batch.id, NOW, "a", LEASE_S, 5) == []


async def test_a_paused_batch_gives_no_calls(repository: BatchRepository, agent_id: str) -> None:
    batch = await new_batch(repository, agent_id, 2, paused=True)
    assert await repository.claim_due(batch.id, NOW, "a", LEASE_S, 5) == []


async def test_an_expired_lease_without_a_recorded_dial_is_claimable_again(
    repository: BatchRepository, agent_id: str
) -> None:
    batch = await new_batch(repository, agent_id, 1)
    (claimed,) = await repository.claim_due(batch.id, NOW, "crashed", LEASE_S, 1)
    later = NOW + timedelta(seconds=LEASE_S)
    (again,) = await repository.claim_due(batch.id, later, "b", LEASE_S, 1)
    assert again.id == claimed.id and again.lease_owner == "b"
    assert not await repository.mark_dialling(claimed.id, "crashed")


async def test_a_call_whose_holder_stopped_while_dialling_is_claimed_again_still_dialling(
    repository: BatchRepository, agent_id: str
) -> None:
    batch = await new_batch(repository, agent_id, 1)
    (claimed,) = await repository.claim_due(batch.id, NOW, "crashed", LEASE_S, 1)
    assert await repository.mark_dialling(claimed.id, "crashed")
    later = NOW + timedelta(seconds=LEASE_S)
    (again,) = await repository.claim_due(batch.id, later, "b", LEASE_S, 1)
    assert (again.id, again.lease_owner, again.dial_state) == (claimed.id, "b", "dialling")
    assert again.dial_started is not None
    assert not await repository.mark_dialling(claimed.id, "b")  # reconciled first, never dialled blindly


async def test_a_dial_being_made_is_not_claimed_while_its_lease_holds(
    repository: BatchRepository, agent_id: str
) -> None:
    batch = await new_batch(repository, agent_id, 1)
    (claimed,) = await repository.claim_due(batch.id, NOW, "a", LEASE_S, 1)
    assert await repository.mark_dialling(claimed.id, "a")
    almost = NOW + timedelta(seconds=LEASE_S - 1)
    assert await repository.claim_due(batch.id, almost, "b", LEASE_S, 1) == []


async def test_a_reconciled_dial_that_never_went_out_is_dialled_as_one_attempt(
    repository: BatchRepository, agent_id: str
) -> None:
    batch = await new_batch(repository, agent_id, 1)
    (claimed,) = await repository.claim_due(batch.id, NOW, "crashed", LEASE_S, 1)
    assert await repository.mark_dialling(claimed.id, "crashed")
    await repository.claim_due(batch.id, NOW + timedelta(seconds=LEASE_S), "b", LEASE_S, 1)
    assert not await repository.not_dialled(claimed.id, "crashed")  # only the claim's holder
    assert await repository.not_dialled(claimed.id, "b")
    assert await repository.mark_dialling(claimed.id, "b")
    stored = await repository.get_call(claimed.id)
    assert stored is not None and (stored.dial_state, stored.attempts) == ("dialling", 1)


async def test_claiming_only_unknown_dials_leaves_the_calls_not_yet_dialled(
    repository: BatchRepository, agent_id: str
) -> None:
    batch = await new_batch(repository, agent_id, 3)
    first, _second = await repository.claim_due(batch.id, NOW, "crashed", LEASE_S, 2)
    assert await repository.mark_dialling(first.id, "crashed")
    later = NOW + timedelta(seconds=LEASE_S)
    claimed = await repository.claim_due(batch.id, later, "b", LEASE_S, 5, unknown_only=True)
    assert [row.id for row in claimed] == [first.id]


async def test_marking_dialling_counts_the_attempt_and_happens_once(
    repository: BatchRepository, agent_id: str
) -> None:
    batch = await new_batch(repository, agent_id, 1)
    (claimed,) = await repository.claim_due(batch.id, NOW, "a", LEASE_S, 1)
    assert await repository.mark_dialling(claimed.id, "a")
    assert not await repository.mark_dialling(claimed.id, "a")
    stored = await repository.get_call(claimed.id)
    assert stored is not None and (stored.dial_state, stored.attempts) == ("dialling", 1)


async def test_finishing_counts_completions_and_the_last_one_ends_the_batch(
    repository: BatchRepository, agent_id: str
) -> None:
    batch = await new_batch(repository, agent_id, 2)
    first, second = await repository.claim_due(batch.id, NOW, "a", LEASE_S, 2)
    await repository.finish(first.id, "SUCCESS", created_call_id="call-1")
    midway = await repository.get(agent_id, batch.id)
    assert midway is not None and (midway.completed_count, midway.ended_at) == (1, None)
    await repository.finish(second.id, "ERROR", error="the provider refused the number")
    done = await repository.get(agent_id, batch.id)
    assert done is not None and done.completed_count == 2 and done.ended_at is not None
    success, error = (await repository.get_call(first.id), await repository.get_call(second.id))
    assert success is not None and (success.status, success.call_id, success.dial_state) == (
        "SUCCESS",
        "call-1",
        "dialled",
    )
    assert error is not None and (error.status, error.error) == ("ERROR", "the provider refused the number")


async def test_finishing_twice_counts_once(repository: BatchRepository, agent_id: str) -> None:
    batch = await new_batch(repository, agent_id, 2)
    (claimed, _) = await repository.claim_due(batch.id, NOW, "a", LEASE_S, 2)
    await repository.finish(claimed.id, "SUCCESS")
    await repository.finish(claimed.id, "ERROR")
    stored = await repository.get(agent_id, batch.id)
    assert stored is not None and stored.completed_count == 1


async def test_the_last_calls_finished_at_once_end_the_batch(database: Database, agent_id: str) -> None:
    one, other = BatchRepository(database), BatchRepository(database)
    batch = await new_batch(one, agent_id, 2)
    first, second = await one.claim_due(batch.id, NOW, "a", LEASE_S, 2)
    await asyncio.gather(one.finish(first.id, "SUCCESS"), other.finish(second.id, "SUCCESS"))
    stored = await one.get(agent_id, batch.id)
    assert stored is not None and stored.completed_count == 2 and stored.ended_at is not None


async def test_retrying_a_completed_call_uncounts_it_and_reopens_the_batch(
    repository: BatchRepository, agent_id: str
) -> None:
    batch = await new_batch(repository, agent_id, 1)
    (claimed,) = await repository.claim_due(batch.id, NOW, "a", LEASE_S, 1)
    await repository.mark_dialling(claimed.id, "a")
    await repository.finish(claimed.id, "SUCCESS", created_call_id="call-1")
    retry_at = NOW + timedelta(minutes=1)
    await repository.retry_later(claimed.id, retry_at, attempts=1)
    stored = await repository.get(agent_id, batch.id)
    assert stored is not None and (stored.completed_count, stored.ended_at) == (0, None)
    assert await repository.claim_due(batch.id, NOW, "a", LEASE_S, 1) == []
    (again,) = await repository.claim_due(batch.id, retry_at, "a", LEASE_S, 1)
    assert (again.id, again.attempts, again.dial_state, again.call_id) == (claimed.id, 1, "none", "call-1")


async def test_calls_not_dialled_expire_once_the_window_has_ended(
    repository: BatchRepository, agent_id: str
) -> None:
    end = NOW + timedelta(minutes=10)
    batch = await new_batch(repository, agent_id, 4, window_end=end)
    dialled, abandoned, _, _ = await repository.claim_due(batch.id, NOW, "a", LEASE_S, 4)
    await repository.mark_dialling(dialled.id, "a")
    await repository.finish(dialled.id, "SUCCESS")
    await repository.retry_later(abandoned.id, NOW, attempts=0)
    assert (await repository.expire_unstarted(batch.id, end - timedelta(seconds=1))).count == 0
    assert (await repository.expire_unstarted(batch.id, end)).count == 3
    expired = await repository.calls_page(batch.id, "EXPIRED", None, 10)
    assert expired.total == 3
    stored = await repository.get(agent_id, batch.id)
    assert stored is not None and stored.completed_count == 1 and stored.ended_at == end


async def test_a_call_being_dialled_does_not_expire(repository: BatchRepository, agent_id: str) -> None:
    end = NOW + timedelta(minutes=10)
    batch = await new_batch(repository, agent_id, 1, window_end=end)
    (claimed,) = await repository.claim_due(batch.id, NOW, "a", LEASE_S, 1)
    await repository.mark_dialling(claimed.id, "a")
    assert (await repository.expire_unstarted(batch.id, end + timedelta(hours=1))).count == 0


async def test_active_batches_leave_out_paused_deleted_ended_and_not_yet_started_ones(
    repository: BatchRepository, agent_id: str
) -> None:
    running = await new_batch(repository, agent_id, 1)
    await new_batch(repository, agent_id, 1, paused=True)
    await new_batch(repository, agent_id, 1, window_start=NOW + timedelta(hours=1))
    deleted = await new_batch(repository, agent_id, 1)
    await repository.delete(deleted.id)
    ended = await new_batch(repository, agent_id, 1)
    (call,) = await repository.claim_due(ended.id, NOW, "a", LEASE_S, 1)
    await repository.finish(call.id, "ERROR")
    assert [row.id for row in await repository.active_batches(NOW)] == [running.id]


async def test_a_deleted_batch_is_hidden_and_its_calls_stay_future(
    repository: BatchRepository, agent_id: str
) -> None:
    batch = await new_batch(repository, agent_id, 2)
    await repository.delete(batch.id)
    assert await repository.get(agent_id, batch.id) is None
    found = await repository.get_by_id(batch.id)
    assert found is not None and found.deleted and found.paused
    assert (await repository.calls_page(batch.id, "FUTURE", None, 10)).total == 2
    assert await repository.claim_due(batch.id, NOW, "a", LEASE_S, 5) == []


async def test_the_calls_a_batch_made_are_listed_and_counted_while_live(
    database: Database, repository: BatchRepository, agent_id: str
) -> None:
    batch = await new_batch(repository, agent_id, 2)
    calls = CallRepository(database)
    for ended in (None, NOW):
        await calls.add(
            CallRow(
                id=str(uuid.uuid4()),
                agent_id=agent_id,
                created=NOW,
                ended=ended,
                medium_kind="twilio",
                batch_id=batch.id,
                definition=CallDefinition(join_timeout=30, max_duration=60),
            )
        )
    assert (await repository.created_calls_page(batch.id, None, 10)).total == 2
    assert await repository.live_calls(batch.id) == 1
    assert await calls.live_count() == 1


async def test_live_calls_of_counts_several_batches_in_one_go(
    database: Database, repository: BatchRepository, agent_id: str
) -> None:
    busy, idle = await new_batch(repository, agent_id, 2), await new_batch(repository, agent_id, 1)
    calls = CallRepository(database)
    for _ in range(2):
        await calls.add(
            CallRow(
                id=str(uuid.uuid4()),
                agent_id=agent_id,
                created=NOW,
                medium_kind="twilio",
                batch_id=busy.id,
                definition=CallDefinition(join_timeout=30, max_duration=60),
            )
        )
    assert await repository.live_calls_of([busy.id, idle.id]) == {busy.id: 2}
    assert await repository.live_calls_of([]) == {}


async def test_a_ten_thousand_call_batch_is_stored(repository: BatchRepository, agent_id: str) -> None:
    started = time.perf_counter()
    batch = await new_batch(repository, agent_id, 10_000)
    elapsed = time.perf_counter() - started
    print(f"\n10,000-call batch stored in {elapsed:.2f}s on {repository.db.dialect}")
    assert batch.total_count == 10_000
    assert (await repository.calls_page(batch.id, "FUTURE", None, 1)).total == 10_000


# --- calling hours, the batch_ended event, the scheduler's gauges ---------------------------------------

#: NOW (12:00 UTC) is 07:00 in New York (EST) and 21:00 in Tokyo.
HOURS = {"start": "09:00", "end": "20:00"}


async def batch_of(
    repository: BatchRepository, agent_id: str, specs: list[dict], **fields: object
) -> ScheduledBatchRow:
    row = ScheduledBatchRow(id=str(uuid.uuid4()), agent_id=agent_id, created=NOW, **fields)
    return await repository.create(row, specs)


async def first_dials(repository: BatchRepository, batch_id: str) -> list[datetime]:
    page = await repository.calls_page(batch_id, None, None, 10)
    return [row.next_attempt_at for row in page.rows]


async def test_each_call_is_first_due_when_its_own_calling_hours_open(
    repository: BatchRepository, agent_id: str
) -> None:
    specs = [{**SPEC, "timezone": "America/New_York"}, {**SPEC, "timezone": "Asia/Tokyo"}, SPEC]
    batch = await batch_of(repository, agent_id, specs, calling_hours=HOURS, timezone="Europe/Paris")
    assert await first_dials(repository, batch.id) == [
        datetime(2030, 1, 1, 14, tzinfo=UTC),  # 09:00 EST
        datetime(2030, 1, 2, 0, tzinfo=UTC),  # 09:00 in Tokyo, the next day
        NOW,  # 13:00 in Paris: inside the hours
    ]


async def test_without_calling_hours_every_call_is_due_at_the_window_start(
    repository: BatchRepository, agent_id: str
) -> None:
    start = NOW + timedelta(hours=3)
    batch = await batch_of(repository, agent_id, [{**SPEC, "timezone": "Asia/Tokyo"}], window_start=start)
    assert await first_dials(repository, batch.id) == [start]


async def test_only_the_transaction_that_ends_the_batch_gets_its_fates(
    database: Database, agent_id: str
) -> None:
    one, other = BatchRepository(database), BatchRepository(database)
    batch = await batch_of(one, agent_id, [SPEC, SPEC])
    first, second = await one.claim_due(batch.id, NOW, "a", LEASE_S, 2)
    ends = await asyncio.gather(one.finish(first.id, "SUCCESS"), other.finish(second.id, "ERROR", error="no"))
    assert sorted(ends, key=str) == [None, {"SUCCESS": 1, "ERROR": 1, "EXPIRED": 0}]


def lease_expiries(dial_state: str) -> float:
    return REGISTRY.get_sample_value("callbridge_batch_lease_expiries_total", {"dial_state": dial_state}) or 0


async def test_a_call_claimed_again_after_its_lease_ran_out_is_counted(
    repository: BatchRepository, agent_id: str
) -> None:
    before = lease_expiries("none")
    batch = await batch_of(repository, agent_id, [SPEC, SPEC])
    await repository.claim_due(batch.id, NOW, "crashed", LEASE_S, 1)
    await repository.claim_due(batch.id, NOW + timedelta(seconds=LEASE_S), "b", LEASE_S, 2)
    assert lease_expiries("none") == before + 1


@pytest.mark.parametrize("claimed", [0, 2])
async def test_the_queue_depth_counts_future_and_pending_calls(
    repository: BatchRepository, agent_id: str, claimed: int
) -> None:
    batch = await batch_of(repository, agent_id, [SPEC] * 5)
    await repository.claim_due(batch.id, NOW, "a", LEASE_S, claimed)
    depth = await repository.queue_depth([batch.id])
    assert depth == {"FUTURE": 5 - claimed, "PENDING": claimed}
