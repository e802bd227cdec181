"""Migration 0009 (scheduled calls' dial_started), on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from alembic import command
from app.store.db import Database
from tests.unit.test_migration_0003 import _alembic


async def scheduled_call_columns(db: Database) -> set[str]:
    def read(connection: Connection) -> set[str]:
        return {column["name"] for column in sa.inspect(connection).get_columns("scheduled_calls")}

    async with db.engine.connect() as conn:
        return await conn.run_sync(read)


async def test_a_migrated_database_records_when_a_dial_began(database: Database) -> None:
    assert "dial_started" in await scheduled_call_columns(database)


async def test_the_migration_downgrades_and_upgrades_again(database: Database) -> None:
    await _alembic(database, command.downgrade, "0008")
    assert "dial_started" not in await scheduled_call_columns(database)
    await database.migrate()
    assert "dial_started" in await scheduled_call_columns(database)
