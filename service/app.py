"""The FastAPI application, built per settings by ``create_app`` (no engine exists at import time)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from anyio import to_thread
from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError

from ranktune.service.api import API_PREFIX
from ranktune.service.api.errors import install_error_handlers
from ranktune.service.api.limits import RequestLimits
from ranktune.service.api.routes import admin, dashboard, health, leases, searches
from ranktune.service.auth import is_open
from ranktune.service.db.engine import make_engine, make_sessionmaker
from ranktune.service.db.migrate import head_revision
from ranktune.service.lease_sweep import LeaseSweep
from ranktune.service.metrics import ServiceMetrics
from ranktune.service.queue_filler import queue_filler
from ranktune.service.settings import Settings

log = logging.getLogger("ranktune.app")


def warn_if_open(app: FastAPI) -> None:
    settings: Settings = app.state.settings
    try:
        with app.state.sessions() as session:
            serving_open = is_open(session, settings.open_policy)
    except SQLAlchemyError:
        return  # /healthz reports the database; the warning waits for the first request
    if serving_open and settings.open_mode == "on":
        log.warning("running OPEN (RANKTUNE_OPEN_MODE=on): requests to %s need no token", settings.host)
    elif serving_open:
        log.warning(
            "running OPEN: no API token was ever created, so requests to %s need none; create one with "
            "`ranktune token create --role admin --name NAME`",
            settings.host,
        )


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    # Routes are sync (SQLAlchemy sessions): they run on anyio's thread pool, whose size bounds how
    # many requests touch the database at once. Many more threads than cores only fight for the GIL.
    to_thread.current_default_thread_limiter().total_tokens = settings.request_threads
    warn_if_open(app)
    sweep = None
    if settings.reap_interval_s > 0:  # its own thread: never behind the event loop or other work
        sweep = LeaseSweep(settings, app.state.sessions, app.state.metrics.lease_sweep)
        sweep.start()
    interval_s = settings.top_up_interval_s
    filler = asyncio.create_task(queue_filler(app, interval_s)) if interval_s > 0 else None
    try:
        yield
    finally:
        if filler is not None:
            filler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await filler
        if sweep is not None:
            await asyncio.to_thread(sweep.stop)
        app.state.engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="ranktune",
        summary="Automated LoRA rank-schedule search",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = make_engine(settings)
    app.state.sessions = make_sessionmaker(app.state.engine, settings.sqlite_busy_timeout_ms / 1000)
    app.state.metrics = ServiceMetrics()
    app.state.head_revision = head_revision()
    install_error_handlers(app)
    app.add_middleware(
        RequestLimits,
        max_body_bytes=settings.max_body_bytes,
        max_json_field_bytes=settings.max_json_field_bytes,
        max_adapter_bytes=settings.max_adapter_bytes,
    )
    for router in (searches.router, leases.router, admin.router, health.router):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(health.router, include_in_schema=False)  # /healthz and /metrics at the root too
    app.include_router(dashboard.router)
    return app
