"""`/healthz` (alive), `/readyz` (database and the cluster's Redis reachable, not draining), `/metrics`."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

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


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
