"""How `callbridge` commands reach the service: where it is and which API key (options, environment, a
profile), one client built from that, and one request function turning the API's answers into data or
one-line errors.

Each setting comes from its option (`--url`, `--api-key`), else the profile named by `--profile`, else the
environment (CALLBRIDGE_URL, CALLBRIDGE_API_KEY), else the profile named by CALLBRIDGE_PROFILE, else the
default (the address `callbridge serve` listens on; no key). A profile lives in the profiles file
(CALLBRIDGE_PROFILES_FILE, default ~/.config/callbridge/profiles.toml). An explicit `--profile` beats the
environment so that a key exported for one service is never sent to the one the profile names.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.cli_errors import CommandError, connection_failure, service_unreachable
from app.settings import Settings

DEFAULT_PROFILES_FILE = Path("~/.config/callbridge/profiles.toml")
PROFILE_KEYS = ("url", "api_key")
#: Long enough for a batch's body streamed from a large CSV file.
TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Connection:
    """Where the service is and the key to send."""

    url: str
    api_key: str


def default_url() -> str:
    """The address `callbridge serve` listens on by default."""
    settings = Settings()
    return f"http://{settings.host}:{settings.port}"


def profiles_file(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("CALLBRIDGE_PROFILES_FILE") or DEFAULT_PROFILES_FILE).expanduser()


def read_profile(path: Path, name: str) -> dict[str, str]:
    """The profile `[name]` of the TOML file at `path`; CommandError when the file or the profile is
    missing or malformed (an unknown key, a value that is not a string)."""
    try:
        profiles = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CommandError(f"no profiles file at {path} (for the profile {name!r})") from None
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CommandError(f"{path}: not a TOML file ({exc})") from None
    profile = profiles.get(name)
    if not isinstance(profile, dict):
        known = ", ".join(key for key, value in profiles.items() if isinstance(value, dict)) or "none"
        raise CommandError(f"{path}: no profile [{name}] (profiles: {known})")
    for key, value in profile.items():
        if key not in PROFILE_KEYS:
            raise CommandError(
                f"{path} [{name}]: unknown key {key!r} (a profile has {', '.join(PROFILE_KEYS)})"
            )
        if not isinstance(value, str):
            raise CommandError(f"{path} [{name}]: {key} must be a string")
    return profile


def resolve_connection(
    url: str | None, api_key: str | None, profile: str | None, environ: Mapping[str, str]
) -> Connection:
    """The connection from the options given (None when not), then `--profile`, then `environ`, then
    CALLBRIDGE_PROFILE's profile."""
    if profile:
        stored = read_profile(profiles_file(environ), profile)
        url, api_key = url or stored.get("url"), api_key or stored.get("api_key")
    url = url or environ.get("CALLBRIDGE_URL")
    api_key = api_key or environ.get("CALLBRIDGE_API_KEY")
    name = environ.get("CALLBRIDGE_PROFILE")
    if not profile and name:
        stored = read_profile(profiles_file(environ), name)
        url, api_key = url or stored.get("url"), api_key or stored.get("api_key")
    if not api_key:
        raise CommandError("no API key: pass --api-key or set CALLBRIDGE_API_KEY (or name a --profile)")
    return Connection(url=(url or default_url()).rstrip("/"), api_key=api_key)


def open_client(connection: Connection) -> httpx.Client:
    """An HTTP client for the service, sending the API key on every request."""
    return httpx.Client(base_url=connection.url, headers={"X-API-Key": connection.api_key}, timeout=TIMEOUT_S)


def api_client(args: argparse.Namespace) -> httpx.Client:
    """The client for a command's connection options (`add_connection_options`)."""
    connection = resolve_connection(args.url, args.api_key, getattr(args, "profile", None), os.environ)
    return open_client(connection)


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """`--url`, `--api-key`, `--profile`."""
    parser.add_argument(
        "--url",
        default=None,
        metavar="BASE",
        help="the service (default CALLBRIDGE_URL or http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--api-key", default=None, metavar="KEY", help="X-API-Key (default CALLBRIDGE_API_KEY)"
    )
    parser.add_argument(
        "--profile",
        default=None,
        metavar="NAME",
        help="the [NAME] of ~/.config/callbridge/profiles.toml (or CALLBRIDGE_PROFILES_FILE) for what the "
        "options leave out, before CALLBRIDGE_URL/CALLBRIDGE_API_KEY (CALLBRIDGE_PROFILE: after them)",
    )


def api_error(response: httpx.Response) -> CommandError:
    """`code: detail` from the API's error body, or the status and the start of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str) and detail:
        code = body.get("code") if isinstance(body, dict) else None
        return CommandError(f"{code}: {detail}" if isinstance(code, str) and code else detail)
    return CommandError(f"HTTP {response.status_code}: {response.text[:200].strip()}")


def request(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    """The JSON answer to one request (None for an empty one, such as a 204); CommandError for an error
    answer, an answer that is not JSON, or an unreachable service."""
    try:
        response = client.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        reason = connection_failure(exc)
        if reason is None:
            raise CommandError(f"the request to {client.base_url} failed: {exc}") from exc
        raise service_unreachable(str(client.base_url).rstrip("/"), reason) from exc
    if response.is_error:
        raise api_error(response)
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("content-type", "no content type")
        raise CommandError(
            f"the service at {client.base_url} answered {method} {path} with something not JSON ({kind}): "
            "is it callbridge?"
        ) from None
