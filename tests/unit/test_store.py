"""The store, on SQLite and on PostgreSQL: migrations, rows, first-wins updates, paging, secrets at rest."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import select, text

from app.schemas.call_definition import CallDefinition
from app.store.db import Database, alembic_config
from app.store.paging import Cursor
from app.store.repositories import (
    AgentRepository,
    ApiKeyRepository,
    CallLimitReached,
    CallRepository,
    TelephonyConfigRepository,
)
from app.store.secret_box import SecretBox, SecretDecryptionError
from app.store.tables import AgentRow, CallRow, TelephonyConfigRow, utcnow


def new_call(agent_id: str | None = None, deadline_s: float = 30) -> CallRow:
    now = utcnow()
    return CallRow(
        id=str(uuid.uuid4()),
        agent_id=agent_id,
        created=now,
        join_deadline=now + timedelta(seconds=deadline_s),
        medium_kind="twilio",
        stream_signature_required=False,
        definition=CallDefinition(join_timeout=deadline_s, max_duration=60, medium={"twilio": {}}),
    )


async def test_migrating_again_keeps_the_rows_and_the_newest_revision(database: Database) -> None:
    keys = ApiKeyRepository(database)
    await keys.add("ci", "abcdefgh", "abcdefgh.secretpart")
    await database.migrate()
    assert await keys.verify("abcdefgh.secretpart")
    async with database.session() as session:
        revisions = list(await session.scalars(text("SELECT version_num FROM alembic_version")))
    assert revisions == [ScriptDirectory.from_config(alembic_config()).get_current_head()]


async def test_agents_round_trip_with_aware_timestamps(database: Database) -> None:
    repo = AgentRepository(database)
    now = utcnow()
    await repo.add(AgentRow(id="a1", name="n", call_template={"systemPrompt": "x"}, created=now, updated=now))
    row = await repo.get("a1")
    assert row is not None and row.call_template == {"systemPrompt": "x"}
    assert row.created == now and row.created.tzinfo is not None
    assert await repo.delete("a1") and await repo.get("a1") is None


async def test_first_join_wins_and_ended_calls_cannot_be_joined(database: Database) -> None:
    calls = CallRepository(database)
    call = await calls.add(new_call())
    assert await calls.mark_joined(call.id, utcnow(), "MZ1", "CA1")
    assert not await calls.mark_joined(call.id, utcnow(), "MZ2", None)
    other = await calls.add(new_call())
    assert await calls.mark_ended(other.id, utcnow(), "unjoined")
    assert not await calls.mark_joined(other.id, utcnow(), "MZ3", None)


async def test_first_end_reason_wins(database: Database) -> None:
    calls = CallRepository(database)
    call = await calls.add(new_call())
    assert await calls.mark_ended(call.id, utcnow(), "hangup")
    assert not await calls.mark_ended(call.id, utcnow(), "timeout")
    row = await calls.get(call.id)
    assert row is not None and row.end_reason == "hangup" and row.join_deadline is None


async def test_calls_past_their_join_deadline_are_found(database: Database) -> None:
    calls = CallRepository(database)
    late = await calls.add(new_call(deadline_s=-1))
    await calls.add(new_call(deadline_s=60))
    assert [row.id for row in await calls.past_join_deadline(utcnow())] == [late.id]


async def test_paging_walks_forward_and_back_newest_first(database: Database) -> None:
    calls = CallRepository(database)
    ids = [(await calls.add(new_call("agent"))).id for _ in range(5)]
    await calls.add(new_call("other-agent"))
    first = await calls.page("agent", None, 2)
    assert [r.id for r in first.rows] == ids[::-1][:2] and first.total == 5 and first.previous is None
    second = await calls.page("agent", first.next, 2)
    assert [r.id for r in second.rows] == ids[::-1][2:4]
    third = await calls.page("agent", second.next, 2)
    assert [r.id for r in third.rows] == [ids[0]] and third.next is None
    back = await calls.page("agent", third.previous, 2)
    assert [r.id for r in back.rows] == ids[::-1][2:4]
    assert back.previous is not None and back.next is not None


async def test_the_live_limit_holds_for_creations_racing_through_two_repositories(database: Database) -> None:
    # Two repositories share no in-process lock: only the database's lock keeps the count and insert one step.
    stores = [CallRepository(database), CallRepository(database)]
    outcomes = await asyncio.gather(
        *(stores[n % 2].add_unless_key_taken(new_call(), live_limit=4) for n in range(10)),
        return_exceptions=True,
    )
    assert sum(isinstance(o, tuple) and o[1] for o in outcomes) == 4
    assert sum(isinstance(o, CallLimitReached) for o in outcomes) == 6


async def test_ended_calls_do_not_count_against_the_live_limit(database: Database) -> None:
    calls = CallRepository(database)
    ended = await calls.add(new_call())
    await calls.mark_ended(ended.id, utcnow(), "hangup")
    _, inserted = await calls.add_unless_key_taken(new_call(), live_limit=1)
    assert inserted
    with pytest.raises(CallLimitReached):
        await calls.add_unless_key_taken(new_call(), live_limit=1)


async def test_a_key_taken_is_replayed_even_when_the_limit_is_reached(database: Database) -> None:
    calls = CallRepository(database)
    first = new_call()
    first.idempotency_key = "key-1"
    await calls.add(first)
    again = new_call()
    again.idempotency_key = "key-1"
    row, inserted = await calls.add_unless_key_taken(again, live_limit=1)
    assert not inserted and row.id == first.id


def test_a_foreign_cursor_is_refused() -> None:
    with pytest.raises(Exception, match="cursor"):
        Cursor.decode("bm90LWEtY3Vyc29y")


async def test_credentials_are_encrypted_at_rest_and_decrypt(database: Database) -> None:
    repo = TelephonyConfigRepository(database, SecretBox("k1"))
    await repo.put("twilio", {"accountSid": "AC1"}, {"authToken": "super-secret-token"})
    async with database.session() as session:
        row = await session.scalar(select(TelephonyConfigRow))
    assert row is not None and "super-secret-token" not in str(row.secrets)
    found = await repo.get("twilio")
    assert found is not None and found[0] == {"accountSid": "AC1", "authToken": "super-secret-token"}
    with pytest.raises(SecretDecryptionError):
        await TelephonyConfigRepository(database, SecretBox("another key")).get("twilio")


def test_each_encryption_uses_a_fresh_nonce_and_is_bound_to_its_place() -> None:
    box = SecretBox("k")
    a, b = box.encrypt("same", "twilio/authToken"), box.encrypt("same", "twilio/authToken")
    assert a != b
    assert box.decrypt(a, "twilio/authToken") == "same"
    with pytest.raises(SecretDecryptionError):
        box.decrypt(a, "plivo/authToken")


async def test_api_keys_are_stored_hashed_and_verify(database: Database) -> None:
    repo = ApiKeyRepository(database)
    row = await repo.add("ci", "abcdefgh", "abcdefgh.secretpart")
    assert "secretpart" not in row.key_hash
    assert await repo.verify("abcdefgh.secretpart")
    assert not await repo.verify("abcdefgh.wrong")
    assert not await repo.verify("no-dot")


async def test_a_live_view_gets_its_watched_calls_and_then_the_new_ones_beyond_the_limit(
    database: Database,
) -> None:
    calls = CallRepository(database)
    watched = [(await calls.add(new_call())).id for _ in range(3)]
    before = await calls.last_seq()
    await calls.mark_ended(watched[0], utcnow(), "hangup")
    new = [(await calls.add(new_call())).id for _ in range(2)]
    assert [row.id for row in await calls.watch(None, ())] == watched[1:] + new  # the live ones
    found = await calls.watch(before, watched, limit=1)
    assert {row.id for row in found} == {*watched, new[0]}  # the limit is the new calls'
    assert next(row for row in found if row.id == watched[0]).ended is not None
