"""The database: async engine, sessions, and alembic migrations run in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from alembic import command
from app.store.secret_box import MASTER_SECRET_ATTRIBUTE

#: The PostgreSQL advisory lock held (for its transaction) by whoever migrates; any constant all share.
MIGRATION_LOCK_KEY = 0x63616C6C  # "call"


def migrations_dir() -> Path:
    """The alembic scripts: top-level `alembic/` in a checkout, `app/_migrations` in a wheel."""
    app_dir = Path(__file__).resolve().parent.parent
    for candidate in (app_dir.parent / "alembic", app_dir / "_migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise RuntimeError("alembic migration scripts not found")


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    return cfg


class Database:
    """One engine per process. `schema` isolates a PostgreSQL run (tests) via its search_path."""

    def __init__(self, url: str, schema: str | None = None) -> None:
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        connect_args: dict[str, Any] = {}
        if self.dialect == "sqlite":
            database = parsed.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
        elif schema:
            connect_args["server_settings"] = {"search_path": schema}
        # A file database cannot drop a connection: pinging it cost a round trip through aiosqlite's thread on
        # every checkout (each event flush, each query).
        pre_ping = self.dialect != "sqlite"
        self.engine: AsyncEngine = create_async_engine(url, connect_args=connect_args, pool_pre_ping=pre_ping)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.session: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )

    async def migrate(self, master_secret: str | None = None) -> None:
        """Bring the schema to the newest revision (idempotent).

        `master_secret` (CALLBRIDGE_SECRET_KEY) lets a migration seal secrets stored in plaintext before.
        """
        async with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # Instances starting together would each create the same tables and the second would fail:
                # the first to take this lock migrates, the others wait, then find the schema at head.
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            await conn.run_sync(_upgrade, master_secret)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


def _upgrade(connection: Connection, master_secret: str | None) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    cfg.attributes[MASTER_SECRET_ATTRIBUTE] = master_secret
    command.upgrade(cfg, "head")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # A burst of call set-ups queues writers behind each other on a busy event loop; at 5 s some gave up
    # with "database is locked" (a 500 to the provider's webhook, a failed join) while the lock was moving.
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
