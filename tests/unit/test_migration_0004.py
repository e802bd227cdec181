"""Migration 0004 and the SIP config store, on SQLite and PostgreSQL: one row, fresh defaults first."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from alembic import command
from app.schemas.sip import SipConfigFields
from app.store.db import Database
from app.store.repositories import SipConfigRepository
from app.store.secret_box import SecretBox
from tests.unit.test_migration_0003 import _alembic

BOX = SecretBox("test-master-secret")
CONFIG = SipConfigFields.model_validate(
    {
        "allowedCidrRanges": ["10.0.0.0/8", "192.168.1.7/32"],
        "allowAllAgents": True,
        "allowedAgents": [{"agentId": "agent-1", "toUserPattern": "^sales$"}],
    }
)


async def table_names(db: Database) -> list[str]:
    def names(connection: Connection) -> list[str]:
        return sa.inspect(connection).get_table_names()

    async with db.engine.connect() as conn:
        return await conn.run_sync(names)


async def sip_config_rows(db: Database) -> int:
    async with db.engine.connect() as conn:
        return (await conn.execute(sa.text("SELECT count(*) FROM sip_config"))).scalar_one()


async def test_a_migrated_database_holds_one_row_with_the_fresh_defaults(database: Database) -> None:
    assert await sip_config_rows(database) == 1
    assert await SipConfigRepository(database, BOX).get() == SipConfigFields()


async def test_an_updated_config_reads_back_the_same(database: Database) -> None:
    repository = SipConfigRepository(database, BOX)
    await repository.update(CONFIG)
    assert await repository.get() == CONFIG
    assert await sip_config_rows(database) == 1


async def test_updating_twice_keeps_the_last_config(database: Database) -> None:
    repository = SipConfigRepository(database, BOX)
    await repository.update(CONFIG)
    await repository.update(SipConfigFields(allowed_cidr_ranges=["172.16.0.0/12"]))
    assert await repository.get() == SipConfigFields(allowed_cidr_ranges=["172.16.0.0/12"])


async def test_downgrading_drops_the_table_and_upgrading_brings_the_defaults_back(database: Database) -> None:
    await SipConfigRepository(database, BOX).update(CONFIG)
    await _alembic(database, command.downgrade, "0003")
    assert "sip_config" not in await table_names(database)
    await database.migrate()
    assert await SipConfigRepository(database, BOX).get() == SipConfigFields()


async def test_without_the_row_the_defaults_are_read_and_an_update_recreates_it(database: Database) -> None:
    async with database.engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM sip_config"))
    repository = SipConfigRepository(database, BOX)
    assert await repository.get() == SipConfigFields()
    await repository.update(CONFIG)
    assert await repository.get() == CONFIG
