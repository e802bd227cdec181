"""Migration 0007 (SIP part 2: sip_logs, the fallback handler), on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from alembic import command
from app.schemas.sip import FallbackHandler, SipConfigFields
from app.store.db import Database
from app.store.repositories import SipConfigRepository
from app.store.secret_box import SecretBox
from tests.unit.test_migration_0003 import _alembic

BOX = SecretBox("test-master-secret")
HANDLER = FallbackHandler(url="https://handler.example.com/sip", secrets=["one-secret", "two-secret"])


async def schema(db: Database) -> tuple[set[str], set[str]]:
    """(table names, the sip_config table's columns)."""

    def read(connection: Connection) -> tuple[set[str], set[str]]:
        inspector = sa.inspect(connection)
        columns = {column["name"] for column in inspector.get_columns("sip_config")}
        return set(inspector.get_table_names()), columns

    async with db.engine.connect() as conn:
        return await conn.run_sync(read)


async def test_a_migrated_database_has_sip_messages_and_a_fallback_handler_column(database: Database) -> None:
    tables, columns = await schema(database)
    assert "sip_messages" in tables and "fallback_handler" in columns


async def test_a_fallback_handler_is_stored_and_read_back_with_its_secrets(database: Database) -> None:
    repository = SipConfigRepository(database, BOX)
    await repository.update(SipConfigFields(fallback_handler=HANDLER))
    assert (await repository.get()).fallback_handler == HANDLER


async def test_downgrading_drops_both_and_upgrading_brings_them_back(database: Database) -> None:
    await SipConfigRepository(database, BOX).update(SipConfigFields(fallback_handler=HANDLER))
    await _alembic(database, command.downgrade, "0006")
    tables, columns = await schema(database)
    assert "sip_messages" not in tables and "fallback_handler" not in columns
    await database.migrate()
    assert (await SipConfigRepository(database, BOX).get()).fallback_handler is None
