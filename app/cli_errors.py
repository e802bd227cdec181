"""One clear line, never a traceback, when a `callbridge` command cannot reach what it talks to.

Its own module (not `app/cli.py`) because `python -m app.cli` runs that file as `__main__`: a class defined
there and imported again by `app.simulator.cli` would be a second, different class.
"""

from __future__ import annotations

import errno
import socket

_UNREACHABLE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ECONNREFUSED}


class CommandError(Exception):
    """A command cannot do its job; `str(error)` is the one line to print (exit code 1)."""


def connection_failure(error: BaseException) -> str | None:
    """Why a connection could not be made ("connection refused", "host not found", ...), from `error` or
    what caused it; None when it is not a failure to connect (a missing file, say)."""
    seen: BaseException | None = error
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:
        visited.add(id(seen))
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, socket.gaierror):
            return "host not found"
        if isinstance(seen, TimeoutError):
            return "timed out"
        if isinstance(seen, ConnectionError) or getattr(seen, "errno", None) in _UNREACHABLE:
            return seen.strerror or type(seen).__name__  # type: ignore[attr-defined]
        seen = seen.__cause__ or seen.__context__
    return None


def service_unreachable(url: str, reason: str) -> CommandError:
    """The service at `url` does not answer (`reason` from `connection_failure`)."""
    return CommandError(f"cannot reach the service at {url} ({reason}) — is `callbridge serve` running?")


def database_failure(database_url: str, error: BaseException) -> CommandError | None:
    """The line for a database that cannot be reached or refuses us (its URL shown without the password),
    or None when `error` is something else."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    shown = make_url(database_url).render_as_string(hide_password=True)
    reason = connection_failure(error)
    if reason is not None:
        return CommandError(f"cannot reach the database at {shown} ({reason}); check CALLBRIDGE_DATABASE_URL")
    if isinstance(error, DBAPIError):
        refusal = str(error.orig).splitlines()[0] if error.orig is not None else type(error).__name__
        return CommandError(f"the database at {shown} failed: {refusal}")
    return None
