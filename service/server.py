"""Server-side commands: ``serve``, ``db upgrade`` and ``token create|revoke|list``.

They talk to the database of ``Settings`` directly (no HTTP). The embedded default SQLite database
is migrated automatically; any other database must be upgraded explicitly, as a separate step.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from service.auth import any_active_token
from service.db.engine import make_engine, make_sessionmaker
from service.db.migrate import SchemaStatus, schema_status, upgrade
from service.errors import DatabaseError, ServiceError
from service.settings import Settings, redact_url

log = logging.getLogger("ranktune.server")
UPGRADE_HINT = "ranktune db upgrade"


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
    import uvicorn

    from service.app import create_app
    from service.logs import configure_logging

    configure_logging(settings.log_level, settings.log_json)
    with database(settings) as session:
        tokens_exist = any_active_token(session)
    if not tokens_exist and not settings.is_loopback:
        raise ServiceError(
            f"host: refusing to serve on {settings.host} without an API token; create one with "
            "`ranktune token create --role admin --name NAME` or bind to 127.0.0.1",
            field="host",
        )
    log.info(
        "serving on http://%s:%d, database %s",
        settings.host,
        settings.port,
        redact_url(settings.database_url),
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        access_log=False,
    )


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
    from service.db.repository.tokens import create_token

    with database(settings) as session:
        row, token = create_token(session, name, role)
    out.print(token, highlight=False, soft_wrap=True)
    err.print(
        f"created {row.role} token {row.name!r}; it is shown only this once",
        highlight=False,
        soft_wrap=True,
    )


def run_token_revoke(settings: Settings, name: str, console: Console) -> None:
    from service.db.repository.tokens import revoke_token

    with database(settings) as session:
        row = revoke_token(session, name)
    console.print(f"revoked token {row.name!r}", highlight=False, soft_wrap=True)


def run_token_list(settings: Settings, console: Console) -> None:
    from service.db.repository.tokens import list_tokens

    with database(settings) as session:
        rows = list_tokens(session)
    table = Table(title="API tokens", title_justify="left")
    for column in ("name", "role", "created", "revoked"):
        table.add_column(column)
    for row in rows:
        revoked = row.revoked_at.isoformat(timespec="seconds") if row.revoked_at else "-"
        table.add_row(row.name, row.role, row.created_at.isoformat(timespec="seconds"), revoked)
    console.print(table)
