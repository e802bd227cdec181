"""Migration 0011 (account webhooks and the delivery outbox), on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from alembic import command
from app.store.db import Database
from tests.unit.test_migration_0003 import _alembic

TABLES = {"webhooks", "webhook_deliveries"}


async def tables(db: Database) -> set[str]:
    def read(connection: Connection) -> set[str]:
        return set(sa.inspect(connection).get_table_names())

    async with db.engine.connect() as conn:
        return await conn.run_sync(read)


async def test_a_migrated_database_has_webhooks_and_their_outbox(database: Database) -> None:
    assert await tables(database) >= TABLES


async def test_the_migration_downgrades_and_upgrades_again(database: Database) -> None:
    await _alembic(database, command.downgrade, "0010")
    assert not TABLES & await tables(database)
    await database.migrate()
    assert await tables(database) >= TABLES
