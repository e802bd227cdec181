"""Migration 0010 (batches' calling hours and timezone, the batch event log), on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from alembic import command
from app.store.db import Database
from tests.unit.test_migration_0003 import _alembic


async def schema(db: Database) -> tuple[set[str], set[str]]:
    """The scheduled_batches columns and the tables."""

    def read(connection: Connection) -> tuple[set[str], set[str]]:
        inspector = sa.inspect(connection)
        columns = {column["name"] for column in inspector.get_columns("scheduled_batches")}
        return columns, set(inspector.get_table_names())

    async with db.engine.connect() as conn:
        return await conn.run_sync(read)


async def test_a_migrated_database_has_calling_hours_and_batch_events(database: Database) -> None:
    columns, tables = await schema(database)
    assert {"timezone", "calling_hours"} <= columns
    assert "batch_events" in tables


async def test_the_migration_downgrades_and_upgrades_again(database: Database) -> None:
    await _alembic(database, command.downgrade, "0009")
    columns, tables = await schema(database)
    assert not {"timezone", "calling_hours"} & columns and "batch_events" not in tables
    await database.migrate()
    columns, tables = await schema(database)
    assert {"timezone", "calling_hours"} <= columns and "batch_events" in tables
