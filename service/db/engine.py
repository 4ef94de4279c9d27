"""Engines and sessions, built per app instance from ``Settings`` (never at import time).

SQLite gets WAL (readers never block the writer), a busy timeout, foreign keys, and explicit
transactions: a repository that writes calls ``begin_write`` first, which opens the transaction
with ``BEGIN IMMEDIATE``. A deferred transaction that reads and then writes can fail at once with
"database is locked" (WAL snapshot upgrade) no matter the busy timeout; IMMEDIATE waits instead.
Writers of one process also queue on a lock of their own: SQLite's busy handler waits by sleeping
(up to 100 ms a turn), which under many concurrent writers wastes most of the time it waits.

PostgreSQL connections are tested before use only when they sat idle in the pool for
``db_ping_after_idle_s`` (a server restart or an idle timeout is what kills them); pinging every
checkout cost a round trip per transaction, two or three per lease request. A connection that dies
while busy fails its statement, and SQLAlchemy then drops the whole pool.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.orm import Session, sessionmaker

from ranktune.service.errors import DatabaseError
from ranktune.service.settings import Settings

WRITE_OPTION = "ranktune_write"


def make_engine(settings: Settings) -> Engine:
    url = make_url(settings.database_url)
    pool = {"pool_size": settings.db_pool_size, "max_overflow": settings.db_max_overflow}
    if url.get_backend_name() != "sqlite":
        idle_s = settings.db_ping_after_idle_s
        engine = create_engine(url, pool_pre_ping=idle_s == 0, **pool)
        if idle_s > 0:
            _ping_when_idle(engine, idle_s)
        return engine
    if url.database and url.database != ":memory:":
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": settings.sqlite_busy_timeout_ms / 1000},
        **pool,
    )
    _configure_sqlite(engine, settings.sqlite_busy_timeout_ms)
    return engine


def _ping_when_idle(engine: Engine, idle_s: float) -> None:
    @event.listens_for(engine, "checkin")
    def on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        # ``record.info`` is emptied when a connection is replaced: a new one is not pinged.
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < idle_s:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as e:  # any DBAPI error: the pool replaces the connection and tries again
            raise exc.DisconnectionError(f"pooled connection unusable ({type(e).__name__})") from e


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_sessionmaker(engine: Engine, writer_timeout_s: float = 30.0) -> sessionmaker[Session]:
    if engine.dialect.name != "sqlite":
        return sessionmaker(engine, expire_on_commit=False)
    writer = threading.Lock()
    info = {"writer": writer, "writer_timeout_s": writer_timeout_s}
    factory = sessionmaker(engine, expire_on_commit=False, info=info)

    @event.listens_for(factory, "after_transaction_end")
    def release_writer(session: Session, transaction: Any) -> None:
        if transaction.parent is None and session.info.pop("holds_writer", False):
            writer.release()

    return factory


def begin_write(session: Session) -> None:
    """Start the session's transaction as a write transaction (SQLite: take the write lock now).

    Must come before the session's first query; on PostgreSQL it changes nothing.
    """
    if session.in_transaction():
        raise RuntimeError("begin_write: the session already has a transaction open")
    writer: threading.Lock | None = session.info.get("writer")
    if writer is not None:
        if not writer.acquire(timeout=session.info["writer_timeout_s"]):
            raise DatabaseError("database: busy (another write took too long); retry shortly")
        session.info["holds_writer"] = True
    try:
        session.connection(execution_options={WRITE_OPTION: True})
    except BaseException:
        if session.info.pop("holds_writer", False) and writer is not None:
            writer.release()
        raise
