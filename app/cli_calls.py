"""The commands only calls have: `calls create` (for an agent or without one), `calls events ID [--follow]`
and `calls hangup ID`."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, TextIO
from urllib.parse import quote

import httpx
import orjson

from app.cli_body import add_body_options
from app.cli_client import api_client, request
from app.cli_output import cut, print_json, terminal_width, text
from app.cli_resources import Resource, Subparsers, add_command, cursor_of, positive, run_create
from app.store.paging import MAX_PAGE_SIZE

SEVERITIES = ("debug", "info", "warning", "error")
#: The API's largest page: fewer requests while catching up on a long call.
EVENTS_PAGE_SIZE = MAX_PAGE_SIZE
#: The event every call's log ends with.
ENDED_EVENT = "ended"
EVENT_HEADER = ("AT", "SEVERITY", "TYPE", "TEXT")
EVENT_WIDTHS = (10, 8, 20)


def call_path(call_id: str) -> str:
    return f"/api/calls/{quote(call_id, safe='')}"


# --- create, hangup ------------------------------------------------------------------------------


def cmd_create_call(resource: Resource, args: argparse.Namespace) -> int:
    path = f"/api/agents/{quote(args.agent, safe='')}/calls" if args.agent else None
    return run_create(resource, args, path)


def cmd_hangup(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"type": "hang_up"}
    if args.message:
        body["message"] = args.message
    with api_client(args) as client:
        request(client, "POST", f"{call_path(args.id)}/send_data_message", json=body)
    if not args.json:
        print(f"hung up call {args.id}")
    return 0


# --- events --------------------------------------------------------------------------------------


@dataclass(slots=True)
class EventReader:
    """Reads a call's events from where it left off: the last `next` cursor it was given, and how many
    events after it were already read (the API's last page has no `next`; events are only appended)."""

    client: httpx.Client
    call_id: str
    params: dict[str, str]
    cursor: str | None = None
    read_after_cursor: int = 0

    def new_events(self) -> Iterator[dict[str, Any]]:
        """The events not read before, oldest first, following `next` to the last page."""
        while True:
            query = {**self.params, "pageSize": str(EVENTS_PAGE_SIZE)}
            if self.cursor:
                query["cursor"] = self.cursor
            page = request(self.client, "GET", f"{call_path(self.call_id)}/events", params=query)
            results: list[dict[str, Any]] = page["results"]
            yield from results[self.read_after_cursor :]
            following = cursor_of(page.get("next"))
            if following is None:
                self.read_after_cursor = len(results)
                return
            self.cursor, self.read_after_cursor = following, 0

    def call_has_ended(self) -> bool:
        return request(self.client, "GET", call_path(self.call_id)).get("ended") is not None


def event_line(event: dict[str, Any], width: int) -> str:
    """`   1.204s  info      joined                the stream joined` (the text cut to `width`)."""
    at, severity, kind = (text(event.get(key)) for key in ("callTimestamp", "severity", "type"))
    head = f"{at:>{EVENT_WIDTHS[0]}}  {severity:<{EVENT_WIDTHS[1]}}  {kind:<{EVENT_WIDTHS[2]}}  "
    return head + cut(text(event.get("text")), max(width - len(head), 10))


def header_line() -> str:
    at, severity, kind, what = EVENT_HEADER
    return f"{at:>{EVENT_WIDTHS[0]}}  {severity:<{EVENT_WIDTHS[1]}}  {kind:<{EVENT_WIDTHS[2]}}  {what}"


def print_events(
    reader: EventReader,
    out: TextIO,
    *,
    follow: bool,
    as_json: bool,
    interval: float,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """The call's events on `out`; with `follow`, new ones as they come until the call has ended.

    People get a header (once the first read is in) and a line per event; `as_json` is one array, or one
    event per line when following. Each round asks whether the call has ended before reading, so the
    round after the end holds everything up to it."""
    if as_json and not follow:
        print_json(list(reader.new_events()), out)
        return
    header_due = not as_json
    while True:
        ended = follow and reader.call_has_ended()
        events = list(reader.new_events())
        if header_due:
            out.write(header_line() + "\n")
            header_due = False
        for event in events:
            out.write(
                (orjson.dumps(event).decode() if as_json else event_line(event, terminal_width())) + "\n"
            )
        out.flush()
        if not follow or ended or any(event.get("type") == ENDED_EVENT for event in events):
            return
        sleep(interval)


def cmd_events(args: argparse.Namespace) -> int:
    params = {"minimumSeverity": args.minimum_severity} if args.minimum_severity else {}
    with api_client(args) as client:
        reader = EventReader(client, args.id, params)
        try:
            print_events(reader, sys.stdout, follow=args.follow, as_json=args.json, interval=args.interval)
        except KeyboardInterrupt:
            print("stopped following (the call goes on)", file=sys.stderr)
            return 130
    return 0


# --- the parser ----------------------------------------------------------------------------------


def add_call_commands(sub: Subparsers, resource: Resource) -> None:
    """`calls create`, `calls events`, `calls hangup`."""
    create = add_command(
        sub,
        "create",
        "start a call: with --agent, from the agent's callTemplate (the body gives templateContext, "
        "metadata, medium, ...); without, a call with no agent (the body is the whole call). A medium "
        "with `outgoing` is dialled; the others wait on the call's joinUrl",
        resource,
    )
    create.add_argument("--agent", default=None, metavar="AGENT_ID", help="the agent whose template it uses")
    add_body_options(create, "the call")
    create.set_defaults(func=partial(cmd_create_call, resource))

    events = add_command(
        sub,
        "events",
        "print the call's events, oldest first; with --follow, keep printing new ones until the call ends "
        "(--json: one array, or one event per line with --follow)",
        resource,
    )
    events.add_argument("id", metavar="CALL_ID")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing until the call has ended")
    events.add_argument(
        "--minimum-severity",
        choices=SEVERITIES,
        default=None,
        help="leave out less severe ones (default info)",
    )
    events.add_argument(
        "--interval", type=positive(float), default=1.0, metavar="S", help="seconds between polls (default 1)"
    )
    events.set_defaults(func=cmd_events)

    hangup = add_command(sub, "hangup", "hang up a live call (call_not_active once it is over)", resource)
    hangup.add_argument("id", metavar="CALL_ID")
    hangup.add_argument("--message", default=None, help="why, for the call's events")
    hangup.set_defaults(func=cmd_hangup)
