"""The `callbridge` command: `serve`, `migrate`, `api-keys create`, `simulate`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import string
import sys

from app.settings import Settings

_ALPHANUMERIC = string.ascii_letters + string.digits


def _random(n: int) -> str:
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(n))


def new_api_key() -> tuple[str, str]:
    """(prefix, key): keys look like Ultravox's, `<8 alnum>.<32 alnum>`."""
    prefix = _random(8)
    return prefix, f"{prefix}.{_random(32)}"


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = Settings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not settings.static_api_keys:
        logging.getLogger("callbridge").info(
            "No CALLBRIDGE_API_KEYS set: use a key from `callbridge api-keys create` for /api requests."
        )
    print(
        f"callbridge on http://{settings.host}:{settings.port}  (public URL {settings.base_url}, "
        f"database {settings.resolved_database_url.split('://')[0]})",
        flush=True,
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ws="websockets-sansio",
        proxy_headers=True,
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from app.store.db import Database

    async def run() -> None:
        settings = Settings()
        db = Database(settings.resolved_database_url)
        try:
            await db.migrate()
        finally:
            await db.dispose()
        print(f"database is at the newest schema ({settings.resolved_database_url.split('://')[0]})")

    asyncio.run(run())
    return 0


def cmd_api_keys_create(args: argparse.Namespace) -> int:
    from app.store.db import Database
    from app.store.repositories import ApiKeyRepository

    async def run() -> str:
        db = Database(Settings().resolved_database_url)
        try:
            await db.migrate()
            prefix, key = new_api_key()
            await ApiKeyRepository(db).add(args.name, prefix, key)
            return key
        finally:
            await db.dispose()

    key = asyncio.run(run())
    print(key)
    print("Keep it: it is shown only once. Send it as the X-API-Key header.", file=sys.stderr)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from app.simulator.cli import run_simulation

    return run_simulation(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callbridge", description="Phone calls to voice AI agents.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service (migrates the database first)")
    serve.add_argument("--host", default=None, help="listen address (default CALLBRIDGE_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="listen port (default CALLBRIDGE_PORT or 8000)")
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="create or upgrade the database schema")
    migrate.set_defaults(func=cmd_migrate)

    keys = sub.add_parser("api-keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create an API key and print it (once)")
    create.add_argument("--name", default="default", help="a label for the key")
    create.set_defaults(func=cmd_api_keys_create)

    simulate = sub.add_parser("simulate", help="place a fake provider call against a running callbridge")
    from app.simulator.cli import add_arguments

    add_arguments(simulate)
    simulate.set_defaults(func=cmd_simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
