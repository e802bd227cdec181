"""`callbridge batches create calls.csv` and `callbridge batches watch BATCH_ID`: scheduled batches from a
CSV file (or from a JSON body: `--file`, `--set`), and their progress as one live line. The other verbs
(`list`, `get`, `update`, `delete`) are every resource's (app.cli_resources).

The CSV is read twice, never held: a first pass checks every row (so a bad row is reported with its line
number before anything is sent), a second builds the request body as it is sent, one call at a time. What
is held at once is one row and one chunk of the body (`BODY_CHUNK_BYTES`), whatever the file's size.
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import httpx
import orjson

from app.cli_body import add_body_options, request_body
from app.cli_client import api_client, request
from app.cli_errors import CommandError
from app.cli_output import fields_view, print_json, print_lines
from app.cli_resources import Resource, Subparsers, add_command, positive
from app.schemas.batches import is_timezone

#: Media callbridge dials itself: `--medium` picks which one each call's `to`/`from` go to.
MEDIA = ("twilio", "telnyx", "plivo")
REQUIRED_COLUMNS = ("to", "from")
METADATA_PREFIX = "metadata."
#: The column that is also each call's timezone.
TIMEZONE_COLUMN = "timezone"
#: The request body is sent in pieces of about this size.
BODY_CHUNK_BYTES = 64 * 1024
#: The statuses `watch` counts (FUTURE and PENDING are what is left).
COUNTED_STATUSES = ("SUCCESS", "ERROR", "EXPIRED")
BAR_WIDTH = 20


# --- the CSV -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallColumns:
    """Where each CSV column goes: `to`/`from` to the medium, `metadata.<key>` to metadata, the rest to
    templateContext; a `timezone` column is also the call's timezone (its calling hours are local to it)."""

    header: tuple[str, ...]
    metadata: dict[int, str]
    context: dict[int, str]

    @classmethod
    def from_header(cls, header: list[str], source: str) -> CallColumns:
        """The header's columns; CommandError when `to` or `from` is missing, or a name is repeated."""
        names = tuple(name.strip() for name in header)
        for required in REQUIRED_COLUMNS:
            if required not in names:
                raise CommandError(
                    f"{source}: the header has no `{required}` column (it has: {', '.join(names)})"
                )
        seen: set[str] = set()
        metadata: dict[int, str] = {}
        context: dict[int, str] = {}
        for index, name in enumerate(names):
            if name in seen:
                raise CommandError(f"{source} line 1: the column `{name}` appears twice")
            seen.add(name)
            if name in REQUIRED_COLUMNS:
                continue
            if name.startswith(METADATA_PREFIX):
                key = name[len(METADATA_PREFIX) :]
                if not key:
                    raise CommandError(f"{source} line 1: a `metadata.` column needs a key after the dot")
                metadata[index] = key
            elif not name:
                raise CommandError(f"{source} line 1: column {index + 1} has no name")
            else:
                context[index] = name
        return cls(names, metadata, context)

    def call(self, row: list[str], medium: str, where: str) -> dict[str, Any]:
        """One entry of the batch's `calls`; CommandError naming `where` for a malformed row."""
        if len(row) != len(self.header):
            raise CommandError(f"{where}: {len(row)} fields, the header has {len(self.header)}")
        values = dict(zip(self.header, row, strict=True))
        for required in REQUIRED_COLUMNS:
            if not values[required].strip():
                raise CommandError(f"{where}: empty `{required}`")
        body: dict[str, Any] = {
            "medium": {medium: {"outgoing": {"to": values["to"].strip(), "from": values["from"].strip()}}}
        }
        if self.context:
            body["templateContext"] = {name: row[index] for index, name in self.context.items()}
        if self.metadata:
            body["metadata"] = {key: row[index] for index, key in self.metadata.items()}
        if zone := values.get(TIMEZONE_COLUMN, "").strip():
            body["timezone"] = checked_timezone(zone, where)
        return body


def checked_timezone(name: str, where: str) -> str:
    """`name` if it is an IANA timezone; else CommandError naming `where`."""
    if not is_timezone(name):
        raise CommandError(f"{where}: `{name}` is not an IANA timezone (e.g. America/New_York)")
    return name


def read_calls(path: Path, medium: str) -> Iterator[dict[str, Any]]:
    """The file's calls one at a time, in order; CommandError (with the line number) at the first bad row.

    Blank lines are skipped. Line numbers are the file's (a quoted field may span lines: the row's last).
    """
    source = str(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            header = next(reader, None)
            if header is None:
                raise CommandError(f"{source}: the file is empty (it needs a header with `to` and `from`)")
            columns = CallColumns.from_header(header, source)
            for row in reader:
                if not row or not any(cell.strip() for cell in row):
                    continue
                yield columns.call(row, medium, f"{source} line {reader.line_num}")
    except OSError as exc:
        raise CommandError(f"cannot read {source}: {exc.strerror or exc}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise CommandError(f"{source}: not a readable UTF-8 CSV file ({exc})") from None


def check_calls(path: Path, medium: str) -> int:
    """How many calls the file has, every row checked (the first pass: nothing is kept)."""
    count = sum(1 for _ in read_calls(path, medium))
    if not count:
        raise CommandError(f"{path}: no calls (only a header)")
    return count


def batch_body(fields: dict[str, Any], calls: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    """The JSON body `{...fields, "calls": [...]}`, built as it is sent, in pieces of ~BODY_CHUNK_BYTES."""
    head = orjson.dumps(fields)
    pending = bytearray(head[:-1] + (b',"calls":[' if fields else b'"calls":['))
    first = True
    for call in calls:
        if not first:
            pending += b","
        pending += orjson.dumps(call)
        first = False
        if len(pending) >= BODY_CHUNK_BYTES:
            yield bytes(pending)
            pending.clear()
    pending += b"]}"
    yield bytes(pending)


# --- talking to the service ----------------------------------------------------------------------


def batches_path(agent_id: str) -> str:
    return f"/api/agents/{agent_id}/scheduled_batches"


# --- create --------------------------------------------------------------------------------------


def batch_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The batch's own fields from the options (those not given are left to the API's defaults)."""
    given = {
        "windowStart": args.window_start.isoformat() if args.window_start else None,
        "windowEnd": args.window_end.isoformat() if args.window_end else None,
        "maxConcurrency": args.max_concurrency,
        "callsPerMinute": args.calls_per_minute,
        "timezone": args.timezone,
        "callingHours": args.calling_hours,
    }
    return {name: value for name, value in given.items() if value is not None}


def create_batch(
    client: httpx.Client, agent_id: str, path: Path, fields: dict[str, Any], medium: str
) -> dict[str, Any]:
    """Check the CSV, then POST it as one batch (streamed); the created batch."""
    check_calls(path, medium)
    batch: dict[str, Any] = request(
        client,
        "POST",
        batches_path(agent_id),
        content=batch_body(fields, read_calls(path, medium)),
        headers={"content-type": "application/json"},
    )
    return batch


def cmd_batches_create(args: argparse.Namespace) -> int:
    """From a CSV file (the body's fields beside its calls) or from the body alone (calls included)."""
    fields = {**(request_body(args) or {}), **batch_fields(args)}
    if args.csv is not None and "calls" in fields:
        raise CommandError("the calls come from the CSV file: leave `calls` out of --file and --set")
    if args.csv is None and not fields:
        raise CommandError("no calls: give a CSV file, or the batch with its calls as --file PATH")
    with api_client(args) as client:
        if args.csv is None:
            batch = request(client, "POST", batches_path(args.agent), json=fields)
        else:
            batch = create_batch(client, args.agent, args.csv, fields, args.medium)
    if args.json:
        print_json(batch)
    elif args.csv is None:
        print_lines(fields_view(batch))
    else:  # what matters after sending a file: which batch, and how many of its calls were taken
        print_lines(fields_view({"batchId": batch["batchId"], "totalCount": batch["totalCount"]}))
    return 0


# --- watch ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Progress:
    """A batch's counts at one moment. `dialled` is SUCCESS + ERROR (the API's completedCount)."""

    total: int
    succeeded: int
    failed: int
    expired: int
    live: int
    paused: bool
    window_end: datetime | None
    ended: bool

    @property
    def dialled(self) -> int:
        return self.succeeded + self.failed

    @property
    def settled(self) -> int:
        """Calls with their fate decided (nothing left to dial for them)."""
        return self.succeeded + self.failed + self.expired

    def counts(self) -> tuple[int, ...]:
        """What a change is: the counts and flags (not the ETA, which moves with the clock)."""
        return (self.total, self.succeeded, self.failed, self.expired, self.live, self.paused, self.ended)


def fetch_progress(client: httpx.Client, agent_id: str, batch_id: str) -> Progress:
    """The batch (totalCount, liveCount, endedAt) and one count per status (`?status=&pageSize=1` → total)."""
    path = f"{batches_path(agent_id)}/{batch_id}"
    batch = request(client, "GET", path)
    counts = {
        status: int(
            request(client, "GET", f"{path}/scheduled_calls", params={"status": status, "pageSize": 1})[
                "total"
            ]
        )
        for status in COUNTED_STATUSES
    }
    window_end = batch.get("windowEnd")
    return Progress(
        total=int(batch["totalCount"]),
        succeeded=counts["SUCCESS"],
        failed=counts["ERROR"],
        expired=counts["EXPIRED"],
        live=int(batch.get("liveCount", 0)),
        paused=bool(batch.get("paused")),
        window_end=datetime.fromisoformat(window_end) if window_end else None,
        ended=batch.get("endedAt") is not None,
    )


def short_duration(seconds: float) -> str:
    """`45s`, `12m05s`, `3h20m`."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def eta(progress: Progress, pace: float | None, now: datetime) -> str:
    """When the batch is done at `pace` (calls settled per second), or when its window ends if that is
    sooner (the rest then expires); `ETA ?` before any pace is known and with no window."""
    if progress.ended:
        return "done"
    left = progress.total - progress.settled
    to_window = (progress.window_end - now).total_seconds() if progress.window_end else math.inf
    to_done = left / pace if pace else math.inf
    if to_done <= to_window and to_done < math.inf:
        return f"done in {short_duration(to_done)}"
    if to_window < math.inf:
        return f"window ends in {short_duration(to_window)}"
    return "ETA ?"


def progress_line(progress: Progress, pace: float | None, now: datetime) -> str:
    """`[#####...............] 25/100 dialled · 3 live · 24 ok · 1 failed · 0 expired · done in 1m15s`."""
    done = progress.settled / progress.total if progress.total else 1.0
    filled = min(BAR_WIDTH, int(done * BAR_WIDTH))
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    state = " · paused" if progress.paused and not progress.ended else ""
    return (
        f"[{bar}] {progress.dialled}/{progress.total} dialled · {progress.live} live · "
        f"{progress.succeeded} ok · {progress.failed} failed · {progress.expired} expired · "
        f"{eta(progress, pace, now)}{state}"
    )


@dataclass(slots=True)
class PaceMeter:
    """Calls settled per second since the watch began (None until some have been)."""

    first: tuple[float, int] | None = None

    def update(self, at: float, settled: int) -> float | None:
        if self.first is None:
            self.first = (at, settled)
            return None
        start, was = self.first
        if at <= start or settled <= was:
            return None
        return (settled - was) / (at - start)


def watch(
    poll: Callable[[], Progress],
    out: TextIO,
    interval: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Progress:
    """Poll until the batch has ended, showing its progress on `out`: one line redrawn in place on a
    terminal, else one line per change. Returns the last progress (ended)."""
    redraw = out.isatty()
    meter = PaceMeter()
    shown: tuple[int, ...] | None = None
    while True:
        progress = poll()
        line = progress_line(progress, meter.update(clock(), progress.settled), wall())
        if redraw:  # cut to the terminal's width: a wrapped line could not be redrawn in place
            out.write(f"\r{line[: shutil.get_terminal_size().columns - 1]}\x1b[K")
        elif progress.counts() != shown:
            out.write(line + "\n")
        shown = progress.counts()
        out.flush()
        if progress.ended:
            if redraw:
                out.write("\n")
            return progress
        sleep(interval)


def cmd_batches_watch(args: argparse.Namespace) -> int:
    with api_client(args) as client:
        try:
            watch(lambda: fetch_progress(client, args.agent, args.batch_id), sys.stdout, args.interval)
        except KeyboardInterrupt:
            if sys.stdout.isatty():
                sys.stdout.write("\n")
            print("stopped watching (the batch goes on)", file=sys.stderr)
            return 130
        except CommandError:
            if sys.stdout.isatty():
                sys.stdout.write("\n")
            raise
    return 0


# --- the parser ----------------------------------------------------------------------------------


def aware_datetime(text: str) -> datetime:
    """An ISO 8601 date-time with its UTC offset (`2026-12-03T09:00:00Z`, `...+01:00`)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date-time: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset, e.g. {text}Z or {text}+01:00")
    return value


def calling_hours(text: str) -> dict[str, str]:
    """`09:00-20:00` as the API's callingHours (the API checks the times themselves)."""
    start, dash, end = text.partition("-")
    if not dash or not start.strip() or not end.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: calling hours are START-END, e.g. 09:00-20:00")
    return {"start": start.strip(), "end": end.strip()}


def timezone_name(text: str) -> str:
    try:
        return checked_timezone(text, "--timezone")
    except CommandError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_batch_commands(sub: Subparsers, resource: Resource) -> None:
    """`batches create` (from a CSV file or a JSON body) and `batches watch`, beside the common verbs."""
    create = add_command(
        sub,
        "create",
        "create a batch from a CSV file (columns to, from, metadata.<key>; the rest is templateContext), "
        "or from --file/--set alone (the body with its calls)",
        resource,
    )
    add_body_options(create, "the batch's fields")
    create.add_argument("--window-start", type=aware_datetime, metavar="ISO", help="dial from (default now)")
    create.add_argument(
        "--window-end", type=aware_datetime, metavar="ISO", help="dial until (default: until done)"
    )
    create.add_argument(
        "--max-concurrency", type=positive(int), metavar="N", help="most of its calls live at once"
    )
    create.add_argument("--calls-per-minute", type=positive(float), metavar="N", help="dials a minute")
    create.add_argument(
        "--calling-hours",
        type=calling_hours,
        metavar="HH:MM-HH:MM",
        help="dial only in these local hours each day (each call's timezone column, else --timezone)",
    )
    create.add_argument(
        "--timezone", type=timezone_name, metavar="ZONE", help="the calls' timezone where the CSV gives none"
    )
    create.add_argument(
        "--medium", choices=MEDIA, default="twilio", help="the provider that dials (default twilio)"
    )
    create.add_argument(
        "csv", type=Path, nargs="?", help="the calls: a header with to and from, then one call a line"
    )
    create.set_defaults(func=cmd_batches_create)

    watch_parser = add_command(
        sub, "watch", "show a batch's progress until it has ended", resource, json_option=False
    )
    watch_parser.add_argument("batch_id", metavar="BATCH_ID")
    watch_parser.add_argument(
        "--interval", type=positive(float), default=2.0, metavar="S", help="seconds between polls (default 2)"
    )
    watch_parser.set_defaults(func=cmd_batches_watch)
