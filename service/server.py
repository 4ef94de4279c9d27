"""Server-side commands: ``serve``, ``optuna-sync``, ``db upgrade`` and ``token create|revoke|list``.

They talk to the database of ``Settings`` directly (no HTTP). The embedded default SQLite database
is migrated automatically; any other database must be upgraded explicitly, as a separate step.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ranktune.service.auth import any_active_token
from ranktune.service.db.engine import make_engine, make_sessionmaker
from ranktune.service.db.migrate import SchemaStatus, schema_status, upgrade
from ranktune.service.errors import DatabaseError, ServiceError
from ranktune.service.settings import Settings, redact_url

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("ranktune.server")
UPGRADE_HINT = "ranktune db upgrade"
TRUE_WORDS = {"1", "true", "yes", "on"}
# How `serve` hands its settings (environment and command line merged) to its worker processes.
SETTINGS_ENV = "_RANKTUNE_SERVE_SETTINGS"


def ensure_schema(engine: Engine, settings: Settings) -> SchemaStatus:
    """Refuse a database that is not at the migration head (the default SQLite is upgraded)."""
    status = schema_status(engine)
    if status.at_head:
        return status
    if settings.uses_default_database:
        log.info("upgrading the embedded database %s", redact_url(settings.database_url))
        return upgrade(engine)
    raise DatabaseError(
        f"database: {redact_url(settings.database_url)} is not migrated ({status.describe()}); "
        f"run `{UPGRADE_HINT}` first (with the same RANKTUNE_DATABASE_URL)"
    )


@contextmanager
def database(settings: Settings) -> Iterator[Session]:
    """A session on a database at the migration head."""
    engine = make_engine(settings)
    try:
        ensure_schema(engine, settings)
        with make_sessionmaker(engine, settings.sqlite_busy_timeout_ms / 1000)() as session:
            yield session
    finally:
        engine.dispose()


def run_serve(settings: Settings) -> None:
    from ranktune.service.app import create_app
    from ranktune.service.logs import configure_logging

    configure_logging(settings.log_level, settings.log_json)
    if os.environ.get("RANKTUNE_OPTUNA_MIRROR", "").strip().lower() in TRUE_WORDS:
        log.warning(
            "RANKTUNE_OPTUNA_MIRROR is no longer read: `ranktune serve` never mirrors trials into Optuna "
            "(it delayed the lease sweep); run `ranktune optuna-sync` beside the server instead"
        )
    with database(settings) as session:
        tokens_exist = any_active_token(session)
    if not tokens_exist and not settings.is_loopback:
        raise ServiceError(
            f"host: refusing to serve on {settings.host} without an API token; create one with "
            "`ranktune token create --role admin --name NAME` or bind to 127.0.0.1",
            field="host",
        )
    log.info(
        "serving on http://%s:%d with %d process%s, database %s",
        settings.host,
        settings.port,
        settings.api_workers,
        "" if settings.api_workers == 1 else "es",
        redact_url(settings.database_url),
    )
    if settings.api_workers == 1:
        _uvicorn(create_app(settings), settings)
        return
    # Several processes, each with its own GIL, engine and pool, accepting on one socket: the lease
    # protocol keeps all its state in the database, as with replicas behind a load balancer.
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    _uvicorn(
        "ranktune.service.server:app_from_environment", settings, factory=True, workers=settings.api_workers
    )


def _uvicorn(
    app: FastAPI | str, settings: Settings, factory: bool = False, workers: int | None = None
) -> None:
    import uvicorn

    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        factory=factory,
        workers=workers,
        log_config=None,
        log_level=settings.log_level,
        access_log=False,
    )


def app_from_environment() -> FastAPI:
    """The app of one worker process of a multi-process `serve` (uvicorn calls this factory)."""
    from ranktune.service.app import create_app
    from ranktune.service.logs import configure_logging

    settings = Settings.model_validate_json(os.environ[SETTINGS_ENV])
    configure_logging(settings.log_level, settings.log_json)
    return create_app(settings)


def run_optuna_sync(settings: Settings, interval_s: float, once: bool, console: Console) -> None:
    """Mirror finished trials into Optuna studies: one pass (``once``), else a pass every
    ``interval_s`` until SIGTERM or SIGINT. In a loop a failed pass is logged and retried."""
    from ranktune.service import optuna_mirror
    from ranktune.service.logs import configure_logging

    storage = optuna_mirror.storage_url(settings.database_url)
    if storage is None:
        raise ServiceError(
            f"database: {redact_url(settings.database_url)} has no Optuna mirror (only a SQLite file "
            "or PostgreSQL has one); set RANKTUNE_DATABASE_URL to the server's database",
            field="database_url",
        )
    if not once:  # a daemon logs; one pass says what it did on stdout
        configure_logging(settings.log_level, settings.log_json)
    # A pass reads on one connection and creates the Optuna schema on a second, the first time.
    engine = make_engine(settings.model_copy(update={"db_pool_size": 2, "db_max_overflow": 0}))
    stop = threading.Event()
    previous = {} if once else _stop_on_signals(stop)
    try:
        ensure_schema(engine, settings)
        sessions = make_sessionmaker(engine, settings.sqlite_busy_timeout_ms / 1000)
        target = redact_url(storage)
        if not once:
            log.info("mirroring finished trials into %s every %g s", target, interval_s)
        while True:
            try:
                with sessions() as session:
                    written = optuna_mirror.sync(engine, session, settings.database_url)
            except Exception as e:
                if once:
                    raise DatabaseError(
                        f"database: the Optuna mirror failed ({type(e).__name__}: {e})"
                    ) from e
                log.exception("optuna mirror pass failed; trying again in %.0f s", interval_s)
            else:
                if once:
                    console.print(
                        f"mirrored {written} trial(s) into {target}", highlight=False, soft_wrap=True
                    )
                elif written:
                    log.info("mirrored %d trial(s) into %s", written, target, extra={"action": "optuna_sync"})
            if once or stop.wait(interval_s):
                return
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        optuna_mirror.close_storages()
        engine.dispose()


def _stop_on_signals(stop: threading.Event) -> dict[int, Any]:
    """SIGTERM and SIGINT end the loop between passes (a pass is never cut in half)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, Any] = {}
    for number in (signal.SIGTERM, signal.SIGINT):
        previous[number] = signal.signal(number, lambda *_: stop.set())
    return previous


def run_db_upgrade(settings: Settings, console: Console) -> None:
    engine = make_engine(settings)
    try:
        before = schema_status(engine)
        after = upgrade(engine)
    finally:
        engine.dispose()
    what = (
        "already at" if before.current == after.current else f"upgraded from {before.current or '(empty)'} to"
    )
    console.print(
        f"database {redact_url(settings.database_url)}: {what} revision {after.current} (head)",
        highlight=False,
        soft_wrap=True,
    )


def run_token_create(settings: Settings, name: str, role: str, out: Console, err: Console) -> None:
    from ranktune.service.db.repository.tokens import create_token

    with database(settings) as session:
        row, token = create_token(session, name, role)
    out.print(token, highlight=False, soft_wrap=True)
    err.print(
        f"created {row.role} token {row.name!r}; it is shown only this once",
        highlight=False,
        soft_wrap=True,
    )


def run_token_revoke(settings: Settings, name: str, console: Console) -> None:
    from ranktune.service.db.repository.tokens import revoke_token

    with database(settings) as session:
        row = revoke_token(session, name)
    console.print(f"revoked token {row.name!r}", highlight=False, soft_wrap=True)


def run_token_list(settings: Settings, console: Console) -> None:
    from ranktune.service.db.repository.tokens import list_tokens

    with database(settings) as session:
        rows = list_tokens(session)
    table = Table(title="API tokens", title_justify="left")
    for column in ("name", "role", "created", "revoked"):
        table.add_column(column)
    for row in rows:
        revoked = row.revoked_at.isoformat(timespec="seconds") if row.revoked_at else "-"
        table.add_row(row.name, row.role, row.created_at.isoformat(timespec="seconds"), revoked)
    console.print(table)
