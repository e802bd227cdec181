"""Migration 0005 (scheduled batches), on SQLite and PostgreSQL: the tables, and the calls' batch columns."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from alembic import command
from app.store.db import Database
from app.store.repositories import AgentRepository, BatchRepository, CallRepository
from app.store.tables import AgentRow, ScheduledBatchRow, utcnow
from tests.unit.test_migration_0003 import _alembic, calls

BATCH_TABLES = {"scheduled_batches", "scheduled_calls"}
CALL_COLUMNS = {"batch_id", "scheduled_call_id"}


async def schema(db: Database) -> tuple[set[str], set[str], set[str]]:
    """(table names, the calls table's columns, the calls table's indexed columns)."""

    def read(connection: Connection) -> tuple[set[str], set[str], set[str]]:
        inspector = sa.inspect(connection)
        columns = {column["name"] for column in inspector.get_columns("calls")}
        indexed = {name for index in inspector.get_indexes("calls") for name in index["column_names"]}
        return set(inspector.get_table_names()), columns, indexed

    async with db.engine.connect() as conn:
        return await conn.run_sync(read)


async def store_a_batch(db: Database) -> str:
    now = utcnow()
    agent = AgentRow(id=str(uuid.uuid4()), name="m", call_template={}, created=now, updated=now)
    await AgentRepository(db).add(agent)
    batch = ScheduledBatchRow(id=str(uuid.uuid4()), agent_id=agent.id, created=now)
    await BatchRepository(db).create(batch, [{"templateContext": {}}])
    return batch.id


async def test_a_migrated_database_has_the_batch_tables_and_indexed_call_columns(database: Database) -> None:
    tables, columns, indexed = await schema(database)
    assert tables >= BATCH_TABLES
    assert columns >= CALL_COLUMNS and indexed >= CALL_COLUMNS


async def test_calls_stored_before_the_migration_belong_to_no_batch(database: Database) -> None:
    await _alembic(database, command.downgrade, "0004")
    async with database.engine.begin() as conn:
        await conn.execute(
            calls.insert().values(
                id="old-call",
                created=utcnow(),
                medium_kind="exotel",
                stream_signature_required=False,
                definition={"joinTimeout": 30, "maxDuration": 60},
            )
        )
    await database.migrate()
    call = await CallRepository(database).get("old-call")
    assert call is not None and (call.batch_id, call.scheduled_call_id) == (None, None)


async def test_downgrading_drops_the_tables_and_columns_and_upgrading_brings_them_back(
    database: Database,
) -> None:
    await store_a_batch(database)
    await _alembic(database, command.downgrade, "0004")
    tables, columns, _ = await schema(database)
    assert not tables & BATCH_TABLES and not columns & CALL_COLUMNS
    await database.migrate()
    batch_id = await store_a_batch(database)
    assert (await BatchRepository(database).calls_page(batch_id, None, None, 10)).total == 1
