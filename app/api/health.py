"""`/healthz` (alive), `/readyz` (database and the cluster's Redis reachable, not draining), `/metrics`."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.api.route_doc import DocRoute, RouteDoc
from app.metrics import REGISTRY
from app.services import services_of


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    services = services_of(request)
    if services.draining:  # shutting down: load balancers send new calls elsewhere
        return JSONResponse({"status": "draining", "activeSessions": len(services.sessions)}, status_code=503)
    if not services.cluster.available:
        return JSONResponse({"status": "unavailable", "detail": "redis: unreachable"}, status_code=503)
    try:
        await services.db.ping()
    except Exception as exc:
        return JSONResponse(
            {"status": "unavailable", "detail": f"database: {type(exc).__name__}"}, status_code=503
        )
    return JSONResponse({"status": "ready", "activeSessions": len(services.sessions)})


async def metrics(request: Request) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


_STATUS = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "ready", "draining", "unavailable"]},
        "activeSessions": {"type": "integer"},
        "detail": {"type": "string"},
    },
}
_PUBLIC = "Public: no API key."
ROUTES = [
    DocRoute(
        "/healthz", healthz, methods=["GET"], doc=RouteDoc("Alive", "health", _PUBLIC, response=_STATUS)
    ),
    DocRoute(
        "/readyz",
        readyz,
        methods=["GET"],
        doc=RouteDoc(
            "Ready for calls",
            "health",
            _PUBLIC + " 503 with the same shape (`draining` or `unavailable`) when it is not.",
            response=_STATUS,
        ),
    ),
    DocRoute(
        "/metrics",
        metrics,
        methods=["GET"],
        doc=RouteDoc(
            "Prometheus metrics",
            "health",
            _PUBLIC,
            response={"type": "string"},
            media_type=CONTENT_TYPE_LATEST.split(";")[0],
        ),
    ),
]
