"""What API commands print: a table or a field-per-line view for people, the API's JSON for scripts."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TextIO

import orjson

GAP = "  "
#: A shortened text column keeps at least this many characters (or its header's).
MIN_TEXT_WIDTH = 8
ELLIPSIS = "…"

#: `id` and `time` cells are never shortened; `text` cells are, to fit the terminal.
Kind = Literal["id", "text", "time"]


@dataclass(frozen=True, slots=True)
class Column:
    """One table column: its header and its cell, a (dotted) field of the row or a function of the row."""

    header: str
    value: str | Callable[[dict[str, Any]], Any]
    kind: Kind = "text"

    def cell(self, row: dict[str, Any]) -> str:
        raw = self.value(row) if callable(self.value) else dotted(row, self.value)
        return time_text(raw) if self.kind == "time" and isinstance(raw, str) else text(raw)


def dotted(data: Any, path: str) -> Any:
    """`data["a"]["b"]` for `a.b` (None where a step is missing)."""
    for part in path.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def text(value: Any) -> str:
    """A value on one line: `-` for null, true/false, text as it is (newlines shown as \\n; `""` when
    empty), else JSON."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if not value:
            return '""'
        return value.replace("\r", "\\r").replace("\n", "\\n")
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


def time_text(value: str) -> str:
    """An ISO 8601 time as `2026-12-03 09:00:00` (its zone as the API gave it: UTC)."""
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value


def cut(value: str, width: int) -> str:
    return value if len(value) <= width else value[: max(0, width - 1)] + ELLIPSIS


def fitted_widths(natural: Sequence[int], minimum: Sequence[int], width: int) -> list[int] | None:
    """Column widths within `width` (gaps included), the widest shortenable column shortened first; None
    when even the shortest do not fit."""
    widths = list(natural)
    excess = sum(widths) + len(GAP) * (len(widths) - 1) - width
    while excess > 0:
        shortenable = [i for i, w in enumerate(widths) if w > minimum[i]]
        if not shortenable:
            return None
        widest = max(shortenable, key=lambda i: widths[i])
        widths[widest] -= 1
        excess -= 1
    return widths


def table(rows: Sequence[dict[str, Any]], columns: Sequence[Column], width: int) -> list[str]:
    """The rows as a table with a header, within `width` characters: text columns are shortened (widest
    first), then the last columns left out; the first column is always shown, in full."""
    cells = [[column.cell(row) for column in columns] for row in rows]
    natural = [
        max([len(column.header), *(len(line[i]) for line in cells)]) for i, column in enumerate(columns)
    ]
    minimum = [
        min(natural[i], max(len(column.header), MIN_TEXT_WIDTH)) if column.kind == "text" else natural[i]
        for i, column in enumerate(columns)
    ]
    shown = len(columns)
    widths = fitted_widths(natural, minimum, width)
    while widths is None and shown > 1:
        shown -= 1
        widths = fitted_widths(natural[:shown], minimum[:shown], width)
    widths = widths or natural[:shown]

    def line(values: Sequence[str]) -> str:
        return GAP.join(cut(value, w).ljust(w) for value, w in zip(values, widths, strict=False)).rstrip()

    return [line([column.header for column in columns[:shown]]), *(line(values[:shown]) for values in cells)]


def flattened(data: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """(dotted key, value) for every field, nested objects opened up (an empty one is its own value)."""
    for key, value in data.items():
        if isinstance(value, dict) and value:
            yield from flattened(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def fields_view(data: dict[str, Any]) -> list[str]:
    """One `key  value` line per field (nested keys dotted, as `--set` takes them), nothing shortened."""
    pairs = [(key, text(value)) for key, value in flattened(data)]
    width = max((len(key) for key, _ in pairs), default=0) + len(GAP)
    return [f"{key:<{width}}{value}".rstrip() for key, value in pairs]


def terminal_width() -> int:
    return shutil.get_terminal_size().columns


def print_json(data: Any, out: TextIO | None = None) -> None:
    """`data` as one JSON document (indented)."""
    (out or sys.stdout).write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def print_lines(lines: Iterable[str], out: TextIO | None = None) -> None:
    target = out or sys.stdout
    for value in lines:
        target.write(value + "\n")
