"""The FastAPI application, built per settings by ``create_app`` (no engine exists at import time)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from anyio import to_thread
from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError

from ranktune.service import optuna_mirror
from ranktune.service.api.errors import install_error_handlers
from ranktune.service.api.limits import RequestLimits
from ranktune.service.api.routes import admin, dashboard, health, leases, searches
from ranktune.service.auth import is_open
from ranktune.service.db import leases as lease_protocol
from ranktune.service.db.engine import make_engine, make_sessionmaker
from ranktune.service.db.migrate import head_revision
from ranktune.service.db.types import utcnow
from ranktune.service.metrics import ServiceMetrics
from ranktune.service.settings import Settings

log = logging.getLogger("ranktune.app")
API_PREFIX = "/api/v1"


def reap_once(app: FastAPI) -> int:
    with app.state.sessions() as session:
        return lease_protocol.reap_expired(session, utcnow())


def mirror_once(app: FastAPI) -> int:
    """Mirror finished trials into Optuna studies (see service.optuna_mirror); never fatal."""
    settings: Settings = app.state.settings
    if not settings.optuna_mirror:
        return 0
    try:
        with app.state.sessions() as session:
            return optuna_mirror.sync(app.state.engine, session, settings.database_url)
    except Exception:  # the mirror is for looking: a failure must not stop the reaper
        log.exception("optuna mirror failed; trying again next sweep")
        return 0


async def reaper(app: FastAPI, interval_s: float) -> None:
    """Expire overdue leases every ``interval_s`` even when no worker is claiming."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            reaped = await asyncio.to_thread(reap_once, app)
        except SQLAlchemyError:
            log.exception("lease reaper: database error; trying again in %.0f s", interval_s)
            continue
        if reaped:
            log.info("expired %d lease(s)", reaped, extra={"action": "reap"})
        await asyncio.to_thread(mirror_once, app)


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
    task = (
        asyncio.create_task(reaper(app, settings.reap_interval_s)) if settings.reap_interval_s > 0 else None
    )
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
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
    )
    for router in (searches.router, leases.router, admin.router, health.router):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(health.router, include_in_schema=False)  # /healthz and /metrics at the root too
    app.include_router(dashboard.router)
    return app
