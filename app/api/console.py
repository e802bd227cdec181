"""`GET /console`: the browser console (agents, calls, a call's live timeline and levels, calling an agent).

The page and its files are public: they hold no data. The page asks for an API key and sends it with every
request to `/api` (it keeps the key in the tab's sessionStorage). Everything is served from
`app/console/static`: no CDN, no build step.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles

from app.api.route_doc import DocMount, DocRoute, RouteDoc

STATIC_DIR = Path(__file__).resolve().parent.parent / "console" / "static"
CONSOLE_ASSETS = "/console/static"
#: The page runs only its own files (no inline script, nothing from elsewhere), is framed by nobody, and
#: talks only to this service: text from calls (a SIP header, a transcript) can never run as script here.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; media-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


async def console_page(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)


_PUBLIC = "Public: the page holds no data; it asks for an API key and sends it with each API request."
ROUTES = [
    DocRoute(
        "/console",
        console_page,
        methods=["GET"],
        doc=RouteDoc(
            "The browser console",
            "console",
            _PUBLIC,
            response={"type": "string"},
            media_type="text/html",
        ),
    ),
    DocMount(
        CONSOLE_ASSETS,
        StaticFiles(directory=STATIC_DIR),
        name="console_assets",
        doc=RouteDoc(
            "The console's script and style sheet", "console", _PUBLIC, errors=((404, "not_found"),)
        ),
    ),
]
