"""`GET /openapi.json` (the spec) and `GET /docs` (Swagger UI on it), both public. Swagger UI's files come
from the `openapi-ui-bundles` package and are served here under `/docs/assets`: no CDN, works offline."""

from __future__ import annotations

from openapi_ui_bundles import swagger_ui
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles

from app.api.openapi import build_spec
from app.api.route_doc import DocMount, DocRoute, RouteDoc

DOCS_ASSETS = "/docs/assets"
DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>callbridge API</title>
  <link rel="stylesheet" href="{assets}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{assets}/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{assets}/swagger-ui-bundle.js"></script>
  <script src="{assets}/swagger-ui-standalone-preset.js"></script>
  <script src="{assets}/init.js"></script>
</body>
</html>
"""
#: Served as a file (not inline) so the page needs no inline script.
DOCS_INIT = """window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
  layout: "StandaloneLayout",
  persistAuthorization: true,
});
"""


async def openapi_json(request: Request) -> Response:
    """The spec of the app serving the request (built once, then kept)."""
    spec = getattr(request.app.state, "openapi", None)
    if spec is None:
        spec = request.app.state.openapi = build_spec(request.app.routes)
    return JSONResponse(spec)


async def docs_page(request: Request) -> Response:
    return HTMLResponse(DOCS_PAGE.format(assets=DOCS_ASSETS))


async def docs_init(request: Request) -> Response:
    return Response(DOCS_INIT, media_type="text/javascript")


_PUBLIC = "Public: no API key."
ROUTES = [
    DocRoute(
        "/openapi.json",
        openapi_json,
        methods=["GET"],
        doc=RouteDoc("This API's OpenAPI 3.1 description", "docs", _PUBLIC, response={"type": "object"}),
    ),
    DocRoute(
        "/docs",
        docs_page,
        methods=["GET"],
        doc=RouteDoc(
            "Swagger UI on /openapi.json",
            "docs",
            _PUBLIC,
            response={"type": "string"},
            media_type="text/html",
        ),
    ),
    DocRoute(
        DOCS_ASSETS + "/init.js",
        docs_init,
        methods=["GET"],
        doc=RouteDoc(
            "The docs page's start-up script",
            "docs",
            _PUBLIC,
            response={"type": "string"},
            media_type="text/javascript",
        ),
    ),
    DocMount(
        DOCS_ASSETS,
        StaticFiles(directory=swagger_ui.static_path),
        name="docs_assets",
        doc=RouteDoc(
            "Swagger UI's files (from the openapi-ui-bundles package)",
            "docs",
            _PUBLIC,
            errors=((404, "not_found"),),
        ),
    ),
]
