"""A request body from the command line: `--file body.json` (`-` for stdin), then `--set key=value` pairs
over it (dotted keys for nesting; a value is JSON when it parses as JSON, else text)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from app.cli_errors import CommandError


def add_body_options(parser: argparse.ArgumentParser, what: str) -> None:
    """`--file` and `--set` for a command sending `what` (e.g. "the agent")."""
    parser.add_argument(
        "--file", default=None, metavar="PATH", help=f"{what} as a JSON object from this file (- for stdin)"
    )
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a field over --file's (repeatable): dotted keys nest (callTemplate.systemPrompt=Hi); the value "
        'is JSON when it parses (42, true, null, ["a"], "42" for the text 42), else text',
    )


def read_json_object(path: str) -> dict[str, Any]:
    """The JSON object in the file at `path` (`-`: stdin); CommandError if unreadable or not an object."""
    source = "stdin" if path == "-" else path
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {source}: {exc.strerror or exc}") from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CommandError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CommandError(f"{source}: the body must be a JSON object")
    return data


def parse_value(text: str) -> Any:
    """`text` as JSON when it is valid JSON, else the text itself."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def set_field(body: dict[str, Any], assignment: str) -> None:
    """Apply one `key=value` (dotted key) to `body`, making the objects on its path as needed."""
    key, equals, text = assignment.partition("=")
    parts = key.split(".")
    if not equals or not all(parts):
        raise CommandError(f"--set {assignment!r}: expected KEY=VALUE (dotted keys nest: a.b=1)")
    target = body
    for depth, part in enumerate(parts[:-1]):
        inner = target.setdefault(part, {})
        if not isinstance(inner, dict):
            raise CommandError(f"--set {assignment!r}: {'.'.join(parts[: depth + 1])} is not an object")
        target = inner
    target[parts[-1]] = parse_value(text)


def request_body(args: argparse.Namespace) -> dict[str, Any] | None:
    """The body from `--file` and `--set`, or None when neither was given."""
    if args.file is None and not args.sets:
        return None
    body = read_json_object(args.file) if args.file is not None else {}
    for assignment in args.sets:
        set_field(body, assignment)
    return body
