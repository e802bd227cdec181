"""Shared fixtures: settings on a temporary data dir, in-process API client, a real server, databases."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.testclient import TestClient

from app.main import create_app
from app.media.opus import opus_unavailable
from app.settings import Settings
from app.store.db import Database

API_KEY = "test-key-0123456789"
POSTGRES_URL = os.environ.get(
    "CALLBRIDGE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
TWILIO_ACCOUNT_SID = "AC" + "0" * 32
TWILIO_AUTH_TOKEN = "twilio-auth-token-for-tests"
#: The Twilio config every end-to-end test imports on the shared server.
TWILIO_CONFIG = {
    "accountSid": TWILIO_ACCOUNT_SID,
    "authToken": TWILIO_AUTH_TOKEN,
    "requestContextMapping": {"From": "user.phone_number"},
}
#: Telnyx and Plivo credentials every test that imports them uses (one config per provider per server).
TELNYX_KEY = Ed25519PrivateKey.from_private_bytes(b"telnyx-test-signing-key-32-bytes")
TELNYX_API_KEY = "KEY0123"
TELNYX_ACCOUNT_SID = "AC1"
PLIVO_AUTH_ID = "MAZDQ1ZDA2NGE5ZTIYZJQ4"
PLIVO_AUTH_TOKEN = "plivo-auth-token-for-tests"


def telnyx_public_key() -> str:
    raw = TELNYX_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


TELNYX_CONFIG = {"apiKey": TELNYX_API_KEY, "publicKey": telnyx_public_key(), "accountSid": TELNYX_ACCOUNT_SID}
PLIVO_CONFIG = {"authId": PLIVO_AUTH_ID, "authToken": PLIVO_AUTH_TOKEN}

#: A Twilio Media Streams `start` for stream MZ1 / call CA1 (μ-law 8 kHz).
TWILIO_START = {
    "event": "start",
    "streamSid": "MZ1",
    "start": {
        "streamSid": "MZ1",
        "callSid": "CA1",
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
}


#: Test packages whose tests run calls in real time against a real `callbridge serve`: marked `slow`, so
#: `pytest -m "not slow"` runs the unit, pipeline and API tests alone.
REAL_TIME_PACKAGES = frozenset({"e2e", "conformance"})
TESTS_DIR = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks every test in REAL_TIME_PACKAGES `slow` (by directory, so a new test there cannot forget it);
    skips `needs_opus` tests where libopus is missing (a failure when CALLBRIDGE_REQUIRE_SIP_PEERS says the
    machine must have the SIP tools)."""
    missing_opus = opus_unavailable()
    require_sip_tools = bool(os.environ.get("CALLBRIDGE_REQUIRE_SIP_PEERS"))
    for item in items:
        if (
            item.path.is_relative_to(TESTS_DIR)
            and item.path.relative_to(TESTS_DIR).parts[0] in REAL_TIME_PACKAGES
        ):
            item.add_marker(pytest.mark.slow)
        if missing_opus and item.get_closest_marker("needs_opus") and not require_sip_tools:
            item.add_marker(pytest.mark.skip(reason=missing_opus))


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "api_keys": API_KEY,
        "public_url": "https://bridge.example.com",
        "secret_key": "test-secret-key",
        "sweep_interval": 0.1,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The app in-process (lifespan run), authenticated with the test API key."""
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as test_client:
        yield test_client


# --- databases ----------------------------------------------------------------------------------


async def require_postgres() -> None:
    """Skip, or with CALLBRIDGE_REQUIRE_POSTGRES fail, unless PostgreSQL accepts connections to
    POSTGRES_URL; the message says what to run when the server is up but the database is missing."""
    problem = await _postgres_problem()
    if problem is None:
        return
    if os.environ.get("CALLBRIDGE_REQUIRE_POSTGRES"):
        pytest.fail(f"PostgreSQL is required (CALLBRIDGE_REQUIRE_POSTGRES) but {problem}")
    pytest.skip(problem)


async def _postgres_problem() -> str | None:
    """Why the PostgreSQL tests cannot run, or None when they can."""
    import asyncpg
    from sqlalchemy.engine import make_url

    url = make_url(POSTGRES_URL)
    try:
        connection = await asyncpg.connect(
            url.set(drivername="postgresql").render_as_string(False), timeout=3
        )
    except asyncpg.InvalidCatalogNameError:
        return (
            f"the PostgreSQL server has no database {url.database!r}: create it with "
            f"`createdb -h {url.host} -p {url.port or 5432} -U {url.username} {url.database}`"
        )
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        return f"PostgreSQL is not reachable at {url.render_as_string(hide_password=True)} ({exc})"
    await connection.close()
    return None


#: The Redis the cluster tests use (each test under keys of its own).
REDIS_URL = os.environ.get("CALLBRIDGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def require_redis() -> None:
    """Skip, or with CALLBRIDGE_REQUIRE_REDIS fail, unless Redis answers at REDIS_URL."""
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    client = Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        problem = f"Redis is not reachable at {REDIS_URL} ({exc})"
        if os.environ.get("CALLBRIDGE_REQUIRE_REDIS"):
            pytest.fail(f"Redis is required (CALLBRIDGE_REQUIRE_REDIS) but {problem}")
        pytest.skip(problem)
    finally:
        await client.aclose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated, empty database: a SQLite file, and PostgreSQL in a schema of its own."""
    if request.param == "sqlite":
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
        await db.migrate()
        yield db
        await db.dispose()
        return
    async with postgres_schema() as schema:
        db = Database(POSTGRES_URL, schema=schema)
        try:
            await db.migrate()
            yield db
        finally:
            await db.dispose()


@contextlib.asynccontextmanager
async def postgres_schema() -> AsyncIterator[str]:
    """The name of a new, empty PostgreSQL schema (skipped without the server), dropped on the way out."""
    await require_postgres()
    import asyncpg

    schema = f"cb_test_{uuid.uuid4().hex[:12]}"
    dsn = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")
    admin = await asyncpg.connect(dsn)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()


@contextlib.asynccontextmanager
async def fresh_postgres_database() -> AsyncIterator[str]:
    """A new, empty PostgreSQL database of its own (dropped after): its CALLBRIDGE_DATABASE_URL."""
    await require_postgres()
    import asyncpg

    name = f"callbridge_e2e_{uuid.uuid4().hex[:10]}"
    admin_dsn = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


# --- a real server on a loopback port --------------------------------------------------------------


@dataclass
class RunningServer:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def api(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, headers={"X-API-Key": API_KEY}, timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def data_dir(self) -> Path:
        """The server's CALLBRIDGE_DATA_DIR (its SQLite database and secret key)."""
        return self.log_path.parent / "data"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def run_server(
    workdir: Path, serve_args: Sequence[str] = (), **env_overrides: str
) -> Iterator[RunningServer]:
    """`callbridge serve [serve_args]` in a subprocess on a free loopback port (SQLite unless the env says
    otherwise)."""
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "CALLBRIDGE_PORT": str(port),
        "CALLBRIDGE_PUBLIC_URL": base_url,
        "CALLBRIDGE_API_KEYS": API_KEY,
        "CALLBRIDGE_DATA_DIR": str(workdir / "data"),
        "CALLBRIDGE_SWEEP_INTERVAL": "0.1",
        "CALLBRIDGE_LOG_LEVEL": "warning",
        # webRtc calls: ICE on loopback only (aioice leaves loopback out by default).
        "CALLBRIDGE_WEBRTC_HOST_ADDRESSES": "127.0.0.1",
    }
    env.pop("CALLBRIDGE_DATABASE_URL", None)
    env.pop("CALLBRIDGE_SECRET_KEY", None)
    env.update(env_overrides)
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", *serve_args],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    running = RunningServer(base_url, process, log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"callbridge did not start:\n{running.log()}")
            time.sleep(0.1)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One real server for the end-to-end tests, on its embedded SQLite default."""
    with run_server(tmp_path_factory.mktemp("server")) as running:
        yield running


async def import_config(server: RunningServer, name: str, config: dict[str, Any]) -> None:
    """Import `config` (allowing every agent); if the server has this provider's config already, it must be
    this one (every field the API shows back equal), never someone else's."""
    async with server.api() as api:
        body = {**config, "callCreationAllowAllAgents": True}
        response = await api.post(f"/api/telephony_configs/{name}", json=body)
        if response.status_code == 409:
            shown = (await api.get(f"/api/telephony_configs/{name}")).json()
            differing = {key for key, value in body.items() if key in shown and shown[key] != value}
            assert not differing, f"the server's {name} config is not this test's: {sorted(differing)} differ"
            return
        assert response.status_code == 201, response.text


@pytest.fixture
def make_agent(server: RunningServer):  # type: ignore[no-untyped-def]
    """`await make_agent(**callTemplate)`: a new agent on the shared server; returns its id."""

    async def create(**template: Any) -> str:
        async with server.api() as api:
            response = await api.post("/api/agents", json={"name": "e2e", "callTemplate": template})
            assert response.status_code == 201, response.text
            return response.json()["agentId"]

    return create


async def wait_for(predicate, within: float = 10.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll an async predicate until it returns something truthy (returned), or fail."""
    deadline = time.monotonic() + within
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s (last: {result!r})")
        await asyncio.sleep(interval)


# --- reading a call back through the API --------------------------------------------------------


async def get_call(server: RunningServer, call_id: str) -> dict:
    """The call as `GET /api/calls/{callId}` shows it."""
    async with server.api() as api:
        return (await api.get(f"/api/calls/{call_id}")).json()


async def events_of(server: RunningServer, call_id: str, minimum: str = "debug") -> list[dict]:
    """The call's events, oldest first."""
    async with server.api() as api:
        page = await api.get(f"/api/calls/{call_id}/events?minimum_severity={minimum}&pageSize=200")
        return page.json()["results"]


async def ended(server: RunningServer, call_id: str, within: float = 10) -> dict:
    """The call once it has ended (fails if it does not end `within` seconds)."""

    async def check() -> dict | None:
        call = await get_call(server, call_id)
        return call if call["ended"] else None

    return await wait_for(check, within)


@pytest.fixture
def no_cycle_collector() -> Iterator[None]:
    """Only reference counting frees anything while the test runs (what is left in a cycle stays)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
