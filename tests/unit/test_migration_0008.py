"""Migration 0008 (SIP transfer billing), on SQLite and PostgreSQL, and how a SIP call's billing adds up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic import command
from app.calls.service import sip_billed_seconds
from app.store.db import Database
from app.store.repositories import CallRepository
from app.store.tables import CallRow, utcnow
from tests.unit.test_migration_0003 import _alembic, calls
from tests.unit.test_migration_0005 import schema

T0 = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)


def sip_call(
    ended_after: float, sip_ended_after: float | None = None, transfer_billed: float = 0.0
) -> CallRow:
    return CallRow(
        id="c",
        created=T0,
        ended=T0 + timedelta(seconds=ended_after),
        medium_kind="sip",
        sip_ended=None if sip_ended_after is None else T0 + timedelta(seconds=sip_ended_after),
        sip_transfer_billed=transfer_billed,
    )


async def test_a_migrated_database_has_the_sip_transfer_billing_columns(database: Database) -> None:
    _, columns, _ = await schema(database)
    assert columns >= {"sip_ended", "sip_transfer_billed"}


async def store_a_sip_call(database: Database, call_id: str) -> None:
    async with database.engine.begin() as conn:
        await conn.execute(
            calls.insert().values(
                id=call_id,
                created=utcnow(),
                medium_kind="sip",
                stream_signature_required=False,
                definition={"joinTimeout": 30, "maxDuration": 60},
            )
        )


async def test_calls_stored_before_the_migration_have_no_transfer_billing(database: Database) -> None:
    await _alembic(database, command.downgrade, "0007")
    await store_a_sip_call(database, "old-call")
    await database.migrate()
    row = await CallRepository(database).get("old-call")
    assert row is not None and row.sip_ended is None and row.sip_transfer_billed == 0


async def test_a_second_legs_billing_adds_up_in_the_store(database: Database) -> None:
    await store_a_sip_call(database, "c2")
    repo = CallRepository(database)
    await repo.add_sip_transfer_billing("c2", 12.0)
    await repo.add_sip_transfer_billing("c2", 6.0)
    row = await repo.get("c2")
    assert row is not None and row.sip_transfer_billed == 18.0


def test_a_sip_call_without_transfers_bills_its_one_leg_per_deciminute() -> None:
    assert sip_billed_seconds(sip_call(ended_after=13)) == 18


def test_a_bridged_call_bills_the_callers_leg_until_the_bridge_ended_plus_the_second_leg() -> None:
    # The agent left at 20 s; the bridge (second leg invited at 15 s) ran until 50 s.
    assert sip_billed_seconds(sip_call(ended_after=20, sip_ended_after=50, transfer_billed=36)) == 54 + 36
