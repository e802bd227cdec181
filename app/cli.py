"""The `callbridge` command: `serve`, `migrate`, `api-keys create|list|delete`, `simulate`, `--version`, and
a command per API resource (`agents`, `calls`, `configs`, `sip`, `batches`, `webhooks`: app.cli_specs)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import socket
import string
import sys
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, TypeVar

from app.cli_errors import CommandError, database_failure
from app.settings import Settings

if TYPE_CHECKING:
    from app.store.db import Database

T = TypeVar("T")

_ALPHANUMERIC = string.ascii_letters + string.digits


def _random(n: int) -> str:
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(n))


def new_api_key() -> tuple[str, str]:
    """(prefix, key): keys look like Ultravox's, `<8 alnum>.<32 alnum>`."""
    prefix = _random(8)
    return prefix, f"{prefix}.{_random(32)}"


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.api.websocket_protocol import DirectMessagesProtocol
    from app.main import create_app
    from app.serve import DrainingServer

    given = (("host", args.host), ("port", args.port), ("sip_listen", args.sip))
    settings = Settings(**{k: v for k, v in given if v is not None})
    from app.workers import workers_problem

    problem = workers_problem(settings, args.workers)
    if problem is not None:
        print(f"callbridge: {problem}", file=sys.stderr)
        return 2
    if settings.sip_listen:
        from app.sip.service import check_sip_settings

        try:
            check_sip_settings(settings)
        except ValueError as exc:
            print(f"callbridge: {exc}", file=sys.stderr)
            return 2
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
    on_database(_nothing_more)  # migrated before serving: an unreachable database is one clear line
    if args.workers > 1:
        from app.workers import WorkerSupervisor, listening_socket

        return WorkerSupervisor(listening_socket(settings.host, settings.port), args.workers).run()
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ws=DirectMessagesProtocol,
        ws_per_message_deflate=False,  # compressing 20 ms of audio costs more CPU than the bytes it saves
        # uvicorn's limit is global: the largest route's; each route's own is checked by its transport.
        ws_max_size=max(settings.max_stream_message_bytes, settings.max_medium_message_bytes),
        proxy_headers=True,
    )
    server = DrainingServer(config, app.state.services)
    # A worker of `--workers` accepts on the socket its supervisor bound (inherited by descriptor).
    server.run(sockets=[socket.socket(fileno=args.fd)] if args.fd is not None else None)
    return 0 if server.started else 1


def on_database(work: Callable[[Database], Awaitable[T]]) -> T:
    """Runs `work` on the configured database, migrated first; one clear line if it cannot be reached."""
    from app.store.db import Database
    from app.store.secret_box import load_master_secret

    settings = Settings()
    database_url = settings.resolved_database_url

    async def run() -> T:
        db = Database(database_url)
        try:
            await db.migrate(master_secret=load_master_secret(settings.secret_key, settings.data_dir))
            return await work(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(run())
    except Exception as exc:
        failure = database_failure(database_url, exc)
        if failure is None:
            raise
        raise failure from exc


async def _nothing_more(db: Database) -> None:
    return None


def cmd_migrate(args: argparse.Namespace) -> int:
    on_database(_nothing_more)
    print(f"database is at the newest schema ({Settings().resolved_database_url.split('://')[0]})")
    return 0


def cmd_api_keys_create(args: argparse.Namespace) -> int:
    from app.store.repositories import ApiKeyRepository

    async def create(db: Database) -> str:
        prefix, key = new_api_key()
        await ApiKeyRepository(db).add(args.name, prefix, key)
        return key

    print(on_database(create))
    print("Keep it: it is shown only once. Send it as the X-API-Key header.", file=sys.stderr)
    return 0


def cmd_api_keys_list(args: argparse.Namespace) -> int:
    """One line per stored key: prefix, name, created (never the key; keys from CALLBRIDGE_API_KEYS are
    not stored, so not listed)."""
    from app.store.repositories import ApiKeyRepository

    async def list_keys(db: Database) -> list[tuple[str, str, str]]:
        return [
            (row.prefix, row.name, row.created.isoformat(timespec="seconds"))
            for row in await ApiKeyRepository(db).all()
        ]

    keys = on_database(list_keys)
    if not keys:
        print("no API keys stored (create one with `callbridge api-keys create`)", file=sys.stderr)
        return 0
    print(f"{'PREFIX':<10}{'CREATED':<27}NAME")
    for prefix, name, created in keys:
        print(f"{prefix:<10}{created:<27}{name}")
    return 0


def cmd_api_keys_revoke(args: argparse.Namespace) -> int:
    """Deletes the key with this prefix: requests carrying it are refused from now on."""
    from app.store.repositories import ApiKeyRepository

    async def revoke(db: Database) -> bool:
        return await ApiKeyRepository(db).revoke(args.prefix)

    if not on_database(revoke):
        raise CommandError(f"no API key with prefix {args.prefix} (see `callbridge api-keys list`)")
    print(f"revoked API key {args.prefix}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from app.simulator.cli import run_simulation

    return run_simulation(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callbridge", description="Phone calls to voice AI agents.")
    parser.add_argument("--version", action="version", version=f"callbridge {installed_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service (migrates the database first)")
    serve.add_argument("--host", default=None, help="listen address (default CALLBRIDGE_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="listen port (default CALLBRIDGE_PORT or 8000)")
    serve.add_argument(
        "--sip",
        default=None,
        metavar="LISTEN",
        help="SIP listen addresses, e.g. udp:0.0.0.0:5060,tcp:0.0.0.0:5060 (default: CALLBRIDGE_SIP_LISTEN)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes serving the port, each a cluster instance (needs CALLBRIDGE_REDIS_URL; no SIP)",
    )
    serve.add_argument("--fd", type=int, default=None, help=argparse.SUPPRESS)  # a worker's inherited socket
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="create or upgrade the database schema")
    migrate.set_defaults(func=cmd_migrate)

    keys = sub.add_parser("api-keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create an API key and print it (once)")
    create.add_argument("--name", default="default", help="a label for the key")
    create.set_defaults(func=cmd_api_keys_create)
    listing = keys_sub.add_parser("list", help="list stored API keys: prefix, created, name (never the key)")
    listing.set_defaults(func=cmd_api_keys_list)
    revoke = keys_sub.add_parser(
        "delete", aliases=["revoke"], help="delete (revoke) a stored API key: it stops working at once"
    )
    revoke.add_argument("prefix", help="the key's prefix (the part before the dot, as `list` shows it)")
    revoke.set_defaults(func=cmd_api_keys_revoke)

    simulate = sub.add_parser("simulate", help="place a fake provider call against a running callbridge")
    from app.simulator.cli import add_arguments

    add_arguments(simulate)
    simulate.set_defaults(func=cmd_simulate)

    from app.cli_specs import add_resource_parsers

    add_resource_parsers(sub)
    return parser


def installed_version() -> str:
    """The installed package's version (`unknown` when run from a tree that was never installed)."""
    try:
        return version("callbridge")
    except PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CommandError as exc:
        print(f"callbridge: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
