"""`callbridge RESOURCE VERB ...` for the API's resources: a `Resource` says where one lives and how it is
shown; the same commands serve every resource (`list`, `get`, `create`, `update`, `delete`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, TypeAlias
from urllib.parse import quote

import httpx

from app.cli_body import add_body_options, request_body
from app.cli_client import add_connection_options, api_client, request
from app.cli_errors import CommandError
from app.cli_output import Column, fields_view, print_json, print_lines, table, terminal_width
from app.store.paging import MAX_PAGE_SIZE

Verb = Literal["list", "get", "create", "update", "delete"]
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

DEFAULT_LIMIT = 100


@dataclass(frozen=True, slots=True)
class Parent:
    """A required option naming the resource's owner: `{dest}` in its path (`--agent` for batches)."""

    option: str
    dest: str
    metavar: str
    help: str


@dataclass(frozen=True, slots=True)
class Filter:
    """A `list` option sent as a query parameter (`--agent` → `agentId`)."""

    option: str
    param: str
    metavar: str
    help: str


@dataclass(frozen=True, slots=True)
class Resource:
    """One API resource and how the command line shows it.

    `path` is its collection (`/api/agents`), one item is `path/{id}`; with no `id_metavar` the resource is
    a single object at `path` itself (the SIP config). `keyed_create`: `create` names the item too (a
    provider's credentials are created at `/api/telephony_configs/{provider}`)."""

    name: str
    noun: str
    path: str
    verbs: tuple[Verb, ...]
    helps: Mapping[Verb, str]
    columns: tuple[Column, ...] = ()
    id_metavar: str | None = "ID"
    keyed_create: bool = False
    parent: Parent | None = None
    filters: tuple[Filter, ...] = ()
    summary: str = ""
    children: tuple[Resource, ...] = ()
    #: Adds the resource's own commands beside its verbs (`calls events`, `batches watch`).
    extra: Callable[[Subparsers, Resource], None] | None = field(default=None, compare=False)

    def collection_path(self, args: argparse.Namespace) -> str:
        if self.parent is None:
            return self.path
        return self.path.format(**{self.parent.dest: quote(getattr(args, self.parent.dest), safe="")})

    def item_path(self, args: argparse.Namespace) -> str:
        base = self.collection_path(args)
        return base if self.id_metavar is None else f"{base}/{quote(args.id, safe='')}"


# --- the verbs -----------------------------------------------------------------------------------


def show(args: argparse.Namespace, answer: Any) -> None:
    """One object: its JSON with `--json`, else a line per field."""
    if args.json:
        print_json(answer)
    elif isinstance(answer, dict):
        print_lines(fields_view(answer))


def cursor_of(next_link: str | None) -> str | None:
    """The cursor in a page's `next` link (followed on our own base URL, whatever host the link names)."""
    return httpx.URL(next_link).params.get("cursor") if next_link else None


def fetch_pages(
    client: httpx.Client, path: str, params: Mapping[str, str], limit: int, page_size: int
) -> tuple[list[Any], int]:
    """Up to `limit` results, following `next` cursors; and the total the API counts."""
    results: list[Any] = []
    cursor: str | None = None
    total = 0
    while len(results) < limit:
        query = {**params, "pageSize": str(page_size), **({"cursor": cursor} if cursor else {})}
        page = request(client, "GET", path, params=query)
        results.extend(page["results"])
        total = int(page.get("total", len(results)))
        cursor = cursor_of(page.get("next"))
        if cursor is None:
            break
    return results[:limit], total


def run_list(resource: Resource, args: argparse.Namespace) -> int:
    params = {f.param: value for f in resource.filters if (value := getattr(args, f.param)) is not None}
    page_size = args.page_size or min(args.limit, MAX_PAGE_SIZE)
    with api_client(args) as client:
        rows, total = fetch_pages(client, resource.collection_path(args), params, args.limit, page_size)
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print(f"no {resource.name}", file=sys.stderr)
        return 0
    print_lines(table(rows, resource.columns, terminal_width()))
    if total > len(rows):
        print(f"{len(rows)} of {total} {resource.name} shown (--limit N for more)", file=sys.stderr)
    return 0


def run_get(resource: Resource, args: argparse.Namespace) -> int:
    with api_client(args) as client:
        show(args, request(client, "GET", resource.item_path(args)))
    return 0


def run_create(resource: Resource, args: argparse.Namespace, path: str | None = None) -> int:
    """POST the body (`{}` when none is given) to `path`, by default the resource's."""
    target = path or (resource.item_path(args) if resource.keyed_create else resource.collection_path(args))
    with api_client(args) as client:
        show(args, request(client, "POST", target, json=request_body(args) or {}))
    return 0


def run_update(resource: Resource, args: argparse.Namespace) -> int:
    body = request_body(args)
    if not body:
        raise CommandError("nothing to change: give the fields with --set KEY=VALUE or --file PATH")
    with api_client(args) as client:
        show(args, request(client, "PATCH", resource.item_path(args), json=body))
    return 0


def run_delete(resource: Resource, args: argparse.Namespace) -> int:
    with api_client(args) as client:
        request(client, "DELETE", resource.item_path(args))
    if not args.json:  # the API answers a delete with no body: nothing for --json to print
        print(f"deleted {resource.noun} {args.id}")
    return 0


RUNS: dict[Verb, Callable[[Resource, argparse.Namespace], int]] = {
    "list": run_list,
    "get": run_get,
    "create": run_create,
    "update": run_update,
    "delete": run_delete,
}


# --- the parser ----------------------------------------------------------------------------------


def add_command(
    sub: Subparsers, name: str, help_text: str, resource: Resource, *, json_option: bool = True
) -> argparse.ArgumentParser:
    """A command of `resource` with the options API commands have (connection, the parent, `--json`)."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    if resource.parent is not None:
        parent = resource.parent
        parser.add_argument(
            parent.option, dest=parent.dest, required=True, metavar=parent.metavar, help=parent.help
        )
    add_connection_options(parser)
    if json_option:
        parser.add_argument("--json", action="store_true", help="print the API's JSON (for scripts)")
    return parser


def add_verb(sub: Subparsers, resource: Resource, verb: Verb) -> None:
    parser = add_command(sub, verb, resource.helps[verb], resource)
    takes_id = verb in ("get", "update", "delete") or (verb == "create" and resource.keyed_create)
    if takes_id and resource.id_metavar is not None:
        parser.add_argument("id", metavar=resource.id_metavar)
    if verb == "list":
        for f in resource.filters:
            parser.add_argument(f.option, dest=f.param, default=None, metavar=f.metavar, help=f.help)
        parser.add_argument(
            "--limit", type=positive(int), default=DEFAULT_LIMIT, metavar="N", help="at most N (default 100)"
        )
        parser.add_argument(
            "--page-size",
            type=positive(int),
            default=None,
            metavar="N",
            help=f"results per request, 1-{MAX_PAGE_SIZE} (default: the limit, at most {MAX_PAGE_SIZE})",
        )
    if verb in ("create", "update"):
        add_body_options(parser, f"the {resource.noun}")
    parser.set_defaults(func=partial(RUNS[verb], resource))


def add_resource(sub: Subparsers, resource: Resource) -> None:
    """`callbridge NAME VERB ...` for each of the resource's verbs, its own commands and its children's."""
    parser = sub.add_parser(resource.name, help=resource.summary, description=resource.summary)
    verbs = parser.add_subparsers(dest=f"{resource.name}_command", required=True, metavar="COMMAND")
    for verb in resource.verbs:
        add_verb(verbs, resource, verb)
    if resource.extra is not None:
        resource.extra(verbs, resource)
    for child in resource.children:
        add_resource(verbs, child)


def positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: `kind` (int, float) of the text, refused unless more than 0."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0: {text}")
        return value

    return parse
