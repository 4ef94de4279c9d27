"""Health and metrics: no token needed (load balancers and Prometheus call them)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ranktune.service.api.deps import MetricsDep, SessionDep
from ranktune.service.api.openapi import DocumentedRoute
from ranktune.service.auth import is_open
from ranktune.service.db.migrate import current_revision
from ranktune.service.errors import DatabaseError
from ranktune.service.schemas.admin import Health

router = APIRouter(tags=["health"], route_class=DocumentedRoute)


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "Database down or not at head"}},
)
def healthz(request: Request) -> Health | JSONResponse:
    """200 when the database answers and its schema is at the migration head, else 503."""
    state = request.app.state
    head: str = state.head_revision
    try:
        revision = current_revision(state.engine)
        with state.sessions() as session:
            session.execute(text("SELECT 1"))
            open_mode = is_open(session, state.settings.open_policy)
    except (DatabaseError, SQLAlchemyError):
        health = Health(
            status="unavailable", database="unreachable", revision=None, head=head, open_mode=False
        )
        return JSONResponse(health.model_dump(), status_code=503)
    health = Health(
        status="ok" if revision == head else "unavailable",
        database="ok",
        revision=revision,
        head=head,
        open_mode=open_mode,
    )
    if revision != head:
        return JSONResponse(health.model_dump(), status_code=503)
    return health


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(session: SessionDep, service_metrics: MetricsDep) -> PlainTextResponse:
    """Prometheus text format: trials by state, active leases, workers, claim latency."""
    return PlainTextResponse(service_metrics.render(session), media_type="text/plain; version=0.0.4")
