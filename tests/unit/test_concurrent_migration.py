"""Instances started together against one empty PostgreSQL database (a compose or Helm roll-out) each
migrate it at start-up: all of them must come up, on one schema at the newest revision."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from app.store.db import Database
from tests.conftest import POSTGRES_URL, postgres_schema

pytestmark = pytest.mark.postgres

INSTANCES = 4


async def test_instances_migrating_one_empty_database_at_once_all_succeed() -> None:
    async with postgres_schema() as schema:
        databases = [Database(POSTGRES_URL, schema=schema) for _ in range(INSTANCES)]
        try:
            async with asyncio.timeout(60):  # without the lock they can deadlock on each other's DDL
                results = await asyncio.gather(*(db.migrate() for db in databases), return_exceptions=True)
            assert [r for r in results if isinstance(r, BaseException)] == []
            async with databases[0].engine.connect() as conn:
                versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
            assert len(versions) == 1
        finally:
            for db in databases:
                await db.dispose()
