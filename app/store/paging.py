"""Keyset (cursor) paging over a table's ever-increasing `seq` column."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import InvalidInput

MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 100

Direction = Literal["next", "prev"]


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position between rows: rows after (`next`) or before (`prev`) the row with `seq`."""

    seq: int
    direction: Direction

    def encode(self) -> str:
        raw = orjson.dumps({"s": self.seq, "d": self.direction})
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            data = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            seq, direction = int(data["s"]), data["d"]
        except (binascii.Error, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            raise InvalidInput("invalid_cursor", "cursor is not one this server gave out") from None
        if direction not in ("next", "prev"):
            raise InvalidInput("invalid_cursor", "cursor is not one this server gave out")
        return cls(seq, direction)


@dataclass(frozen=True, slots=True)
class PageResult:
    rows: list[Any]
    next: Cursor | None
    previous: Cursor | None
    total: int


def page_size_from(value: str | None) -> int:
    """Validate `?pageSize=` (1..200)."""
    if value is None or value == "":
        return DEFAULT_PAGE_SIZE
    try:
        size = int(value)
    except ValueError:
        raise InvalidInput("invalid_page_size", "pageSize must be a whole number") from None
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise InvalidInput("invalid_page_size", f"pageSize must be between 1 and {MAX_PAGE_SIZE}")
    return size


async def fetch_page(
    session: AsyncSession,
    query: Select[Any],
    seq: ColumnElement[int],
    *,
    newest_first: bool,
    cursor: Cursor | None,
    page_size: int,
) -> PageResult:
    """One page of `query` ordered by `seq` (descending when `newest_first`)."""
    total = await session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    forward = cursor is None or cursor.direction == "next"
    # Walking "forward" follows the listing order; "prev" walks against it and is reversed after.
    descending = newest_first == forward
    if cursor is not None:
        query = query.where(seq < cursor.seq if descending else seq > cursor.seq)
    query = query.order_by(seq.desc() if descending else seq.asc()).limit(page_size + 1)
    rows = list((await session.execute(query)).scalars())
    more = len(rows) > page_size
    rows = rows[:page_size]
    if not forward:
        rows.reverse()
    if not rows:
        return PageResult([], None, None, total)
    first, last = rows[0].seq, rows[-1].seq
    if forward:
        next_cursor = Cursor(last, "next") if more else None
        prev_cursor = Cursor(first, "prev") if cursor is not None else None
    else:
        next_cursor = Cursor(last, "next")
        prev_cursor = Cursor(first, "prev") if more else None
    return PageResult(rows, next_cursor, prev_cursor, total)
