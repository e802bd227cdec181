"""Migration 0006 and the SIP registration store, on SQLite and PostgreSQL: the password sealed, the outcome
kept, a change clearing the old outcome."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from alembic import command
from app.store.db import Database
from app.store.repositories import SipRegistrationRepository
from app.store.secret_box import SecretBox
from app.store.tables import SipRegistrationRow, utcnow
from tests.unit.test_migration_0003 import _alembic

BOX = SecretBox("test-secret-key")


def new_row() -> SipRegistrationRow:
    return SipRegistrationRow(
        id=str(uuid.uuid4()),
        created=utcnow(),
        username="bot",
        password="botpass",
        proxy="pbx.example.com",
        tls_verify=True,
    )


async def table_names(db: Database) -> set[str]:
    def names(connection: Connection) -> set[str]:
        return set(sa.inspect(connection).get_table_names())

    async with db.engine.connect() as conn:
        return await conn.run_sync(names)


async def stored_password(db: Database, registration_id: str) -> str:
    async with db.engine.connect() as conn:
        query = sa.text("SELECT password FROM sip_registrations WHERE id = :id")
        return (await conn.execute(query, {"id": registration_id})).scalar_one()


async def test_the_password_is_stored_sealed_and_opens_again(database: Database) -> None:
    repository = SipRegistrationRepository(database, BOX)
    row = await repository.add(new_row())
    sealed = await stored_password(database, row.id)
    assert "botpass" not in sealed
    stored = await repository.get(row.id)
    assert stored is not None and repository.password(stored) == "botpass"


async def test_a_new_registration_has_no_outcome_yet(database: Database) -> None:
    repository = SipRegistrationRepository(database, BOX)
    stored = await repository.get((await repository.add(new_row())).id)
    assert stored is not None
    assert (stored.successful, stored.last_error, stored.expires_at) == (None, None, None)
    assert stored.outbound_proxy is None and stored.auth_user is None and stored.tls_verify is True


async def test_an_outcome_reads_back(database: Database) -> None:
    repository = SipRegistrationRepository(database, BOX)
    row = await repository.add(new_row())
    expires = utcnow()
    await repository.record_outcome(row.id, True, None, expires)
    stored = await repository.get(row.id)
    assert stored is not None and (stored.successful, stored.expires_at) == (True, expires)


async def test_a_change_clears_the_outcome_and_reseals_a_new_password(database: Database) -> None:
    repository = SipRegistrationRepository(database, BOX)
    row = await repository.add(new_row())
    await repository.record_outcome(row.id, False, "403 Forbidden", None)
    updated = await repository.update(row.id, password="new-pass", auth_user="1001")
    assert updated is not None and (updated.successful, updated.last_error) == (None, None)
    assert repository.password(updated) == "new-pass" and updated.auth_user == "1001"


async def test_an_outcome_for_a_deleted_registration_changes_nothing(database: Database) -> None:
    repository = SipRegistrationRepository(database, BOX)
    row = await repository.add(new_row())
    assert await repository.delete(row.id)
    await repository.record_outcome(row.id, True, None, utcnow())
    assert await repository.all() == []


async def test_downgrading_drops_the_table_and_upgrading_brings_it_back(database: Database) -> None:
    await SipRegistrationRepository(database, BOX).add(new_row())
    await _alembic(database, command.downgrade, "0005")
    assert "sip_registrations" not in await table_names(database)
    await database.migrate()
    assert await SipRegistrationRepository(database, BOX).all() == []
