"""Cursor-paged list responses: `{results, next, previous, total}` with next/previous as URLs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from app.store.paging import Cursor, PageResult, page_size_from


def page_params(request: Request) -> tuple[Cursor | None, int]:
    """(cursor, pageSize) from the query string, validated."""
    raw = request.query_params.get("cursor")
    return (Cursor.decode(raw) if raw else None), page_size_from(request.query_params.get("pageSize"))


def page_response(
    request: Request, page: PageResult, render: Callable[[Any], dict[str, Any]]
) -> JSONResponse:
    def link(cursor: Cursor | None) -> str | None:
        if cursor is None:
            return None
        return str(request.url.include_query_params(cursor=cursor.encode()))

    return JSONResponse(
        {
            "results": [render(row) for row in page.rows],
            "next": link(page.next),
            "previous": link(page.previous),
            "total": page.total,
        }
    )
