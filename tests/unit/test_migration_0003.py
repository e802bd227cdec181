"""Migration 0003 seals the pipeline secrets stored in plaintext before it, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.config import Config
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection
from starlette.testclient import TestClient

from alembic import command
from app.main import create_app
from app.pipeline.secret_options import PipelineSecrets, agent_owner, call_owner
from app.store.db import Database, alembic_config
from app.store.secret_box import MASTER_SECRET_ATTRIBUTE, SecretBox
from app.store.tables import utcnow
from tests.conftest import API_KEY, POSTGRES_URL, make_settings, require_postgres

MASTER = "migration-test-key"
AGENT_PIPELINE = {
    "websocket": {
        "url": "ws://127.0.0.1:9/agent",
        "secret": "agent-secret",
        "headers": {"X-Token": "hdr-secret"},
    }
}
CALL_PIPELINE = {"openaiRealtime": {"apiKey": "sk-call-secret"}}
PLAINTEXTS = ("agent-secret", "hdr-secret", "sk-call-secret")

Json = sa.JSON().with_variant(JSONB(), "postgresql")
agents = sa.table(
    "agents",
    sa.column("id", sa.String),
    sa.column("name", sa.String),
    sa.column("call_template", Json),
    sa.column("created", sa.DateTime(timezone=True)),
    sa.column("updated", sa.DateTime(timezone=True)),
)
calls = sa.table(
    "calls",
    sa.column("id", sa.String),
    sa.column("agent_id", sa.String),
    sa.column("created", sa.DateTime(timezone=True)),
    sa.column("medium_kind", sa.String),
    sa.column("stream_signature_required", sa.Boolean),
    sa.column("definition", Json),
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_at_0002(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A database migrated to revision 0002 only: a SQLite file, or PostgreSQL in a schema of its own."""
    if request.param == "sqlite":
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
        await _upgrade_to(db, "0002")
        yield db
        await db.dispose()
        return
    await require_postgres()
    import asyncpg

    schema = f"cb_mig_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://"))
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    db = Database(POSTGRES_URL, schema=schema)
    try:
        await _upgrade_to(db, "0002")
        yield db
    finally:
        await db.dispose()
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()


async def _upgrade_to(db: Database, revision: str) -> None:
    await _alembic(db, command.upgrade, revision)


async def _alembic(
    db: Database, action: Callable[[Config, str], None], revision: str, master: str | None = None
) -> None:
    """`alembic upgrade|downgrade revision` on the database, as `Database.migrate` runs it."""

    def run(connection: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes.update({"connection": connection, MASTER_SECRET_ATTRIBUTE: master})
        action(cfg, revision)

    async with db.engine.begin() as conn:
        await conn.run_sync(run)


async def store_plaintext_rows(db: Database) -> None:
    """What 0002-era callbridge stored: an agent and two calls with their secrets in plaintext."""
    now = utcnow()
    call = {"medium_kind": "exotel", "stream_signature_required": False, "created": now}
    async with db.engine.begin() as conn:
        await conn.execute(
            agents.insert().values(
                id="agent-1", name="old", call_template={"pipeline": AGENT_PIPELINE}, created=now, updated=now
            )
        )
        await conn.execute(
            calls.insert(),
            [
                {**call, "id": "call-a", "agent_id": "agent-1", "definition": definition(AGENT_PIPELINE)},
                {**call, "id": "call-b", "agent_id": None, "definition": definition(CALL_PIPELINE)},
            ],
        )


def definition(pipeline: dict[str, Any]) -> dict[str, Any]:
    return {"joinTimeout": 30, "maxDuration": 60, "medium": {"exotel": {}}, "pipeline": pipeline}


async def stored_documents(db: Database) -> dict[str, dict[str, Any]]:
    """Every stored template and definition by row id, as the database holds it."""
    async with db.engine.connect() as conn:
        rows = (await conn.execute(sa.select(agents.c.id, agents.c.call_template))).all()
        rows += (await conn.execute(sa.select(calls.c.id, calls.c.definition))).all()
    return {row[0]: row[1] for row in rows}


async def test_upgrading_seals_every_plaintext_pipeline_secret(database_at_0002: Database) -> None:
    await store_plaintext_rows(database_at_0002)
    await database_at_0002.migrate(master_secret=MASTER)
    documents = await stored_documents(database_at_0002)
    assert set(documents) == {"agent-1", "call-a", "call-b"}
    assert not any(secret in str(documents) for secret in PLAINTEXTS)
    secrets = PipelineSecrets(SecretBox(MASTER))
    assert secrets.open(documents["agent-1"]["pipeline"], agent_owner("agent-1")) == AGENT_PIPELINE
    assert secrets.open(documents["call-a"]["pipeline"], call_owner("call-a", "agent-1")) == AGENT_PIPELINE
    assert secrets.open(documents["call-b"]["pipeline"], call_owner("call-b", None)) == CALL_PIPELINE


async def test_downgrading_puts_the_plaintext_back(database_at_0002: Database) -> None:
    await store_plaintext_rows(database_at_0002)
    await database_at_0002.migrate(master_secret=MASTER)
    await _alembic(database_at_0002, command.downgrade, "0002", MASTER)
    documents = await stored_documents(database_at_0002)
    assert documents["agent-1"]["pipeline"] == AGENT_PIPELINE
    assert documents["call-b"]["pipeline"] == CALL_PIPELINE


async def test_upgrading_plaintext_secrets_without_the_key_fails_clearly(database_at_0002: Database) -> None:
    await store_plaintext_rows(database_at_0002)
    with pytest.raises(RuntimeError, match="CALLBRIDGE_SECRET_KEY"):
        await database_at_0002.migrate()


async def test_upgrading_a_database_without_secrets_needs_no_key(database_at_0002: Database) -> None:
    await database_at_0002.migrate()
    assert await stored_documents(database_at_0002) == {}


def test_the_app_serves_an_upgraded_database(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"

    async def prepare() -> None:
        db = Database(url)
        await _upgrade_to(db, "0002")
        await store_plaintext_rows(db)
        await db.dispose()

    asyncio.run(prepare())
    settings = make_settings(tmp_path, database_url=url, secret_key=MASTER)
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        shown = client.get("/api/agents/agent-1").json()["callTemplate"]["pipeline"]["websocket"]
        assert shown["secretPrefix"] == "agen" and shown["headers"] == {"X-Token": "hdr-…"}
        services = client.app.state.services  # type: ignore[attr-defined]

        async def live_handshake() -> dict[str, str]:
            row = await services.calls_repo.get("call-a")
            return services.build_pipeline(row)._handshake_headers("call-a")  # type: ignore[no-any-return]

        assert client.portal.call(live_handshake)["X-Token"] == "hdr-secret"  # type: ignore[union-attr]
