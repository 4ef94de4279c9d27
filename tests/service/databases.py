"""Real databases for the service tests: a migrated template per backend and test session, and a
fresh copy of it per test (SQLite: a file copy; PostgreSQL: ``CREATE DATABASE … TEMPLATE``)."""

from __future__ import annotations

import os
import secrets
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from ranktune.service.db.engine import make_engine
from ranktune.service.db.migrate import upgrade_settings
from ranktune.service.db.models import Base
from ranktune.service.settings import Settings

POSTGRES_ADMIN_URL = os.environ.get(
    "RANKTUNE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def postgres_available() -> str | None:
    """None when the test PostgreSQL answers, else why not."""
    engine = create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return None
    except OperationalError as e:
        return f"PostgreSQL at {POSTGRES_ADMIN_URL} is unreachable ({e.__class__.__name__})"
    finally:
        engine.dispose()


def migrate(url: str) -> None:
    upgrade_settings(Settings(database_url=url))


class PostgresDatabases:
    """Creates ``ranktune_test_<random>_*`` databases and drops every one of them at the end.

    With ``ahead``, copying the template for the next test and dropping the last test's copy run on a
    background thread while the tests run: ``CREATE DATABASE … TEMPLATE`` is most of the setup of a
    PostgreSQL test (about 0.1 s, mostly PostgreSQL's own I/O). Every test still gets its own copy.
    """

    def __init__(self, ahead: bool = False) -> None:
        self.prefix = f"ranktune_test_{secrets.token_hex(4)}"
        self.admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        self.created: list[str] = []
        self._template: str | None = None
        self._lock = threading.Lock()
        self._background = ThreadPoolExecutor(1, thread_name_prefix="postgres-databases") if ahead else None
        self._next_copy: Future[str] | None = None

    def url(self, name: str) -> str:
        return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def create(self, suffix: str, template: str | None = None) -> str:
        name = f"{self.prefix}_{suffix}"
        with self.admin.connect() as connection:
            clause = f" TEMPLATE {template}" if template else ""
            connection.execute(text(f'CREATE DATABASE "{name}"{clause}'))
        with self._lock:
            self.created.append(name)
        return name

    def drop(self, name: str) -> None:
        with self.admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        with self._lock:
            if name in self.created:
                self.created.remove(name)

    def template(self) -> str:
        """A database migrated to head, copied by ``fresh`` (migrating once is faster)."""
        if self._template is None:
            name = self.create("template")
            migrate(self.url(name))
            self._template = name
        return self._template

    def _copy(self) -> str:
        """A new copy of the template; with ``ahead`` the one made meanwhile, and the next one begun."""
        template = self.template()
        if self._background is None:
            return self.create(secrets.token_hex(4), template)
        ready = self._next_copy or self._background.submit(self.create, secrets.token_hex(4), template)
        self._next_copy = self._background.submit(self.create, secrets.token_hex(4), template)
        return ready.result()

    @contextmanager
    def fresh(self, migrated: bool = True) -> Iterator[str]:
        name = self._copy() if migrated else self.create(secrets.token_hex(4))
        try:
            yield self.url(name)
        finally:
            if self._background is None:
                self.drop(name)
            else:
                self._background.submit(self.drop, name)

    def close(self) -> None:
        if self._background is not None:
            self._background.shutdown(wait=True)
        for name in list(self.created):
            self.drop(name)
        self.admin.dispose()


class SqliteDatabases:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._template: Path | None = None

    def template(self) -> Path:
        if self._template is None:
            path = self.root / "template.db"
            migrate(f"sqlite:///{path}")
            self._template = path
        return self._template

    @contextmanager
    def fresh(self, migrated: bool = True) -> Iterator[str]:
        path = self.root / f"{secrets.token_hex(4)}.db"
        if migrated:
            shutil.copyfile(self.template(), path)
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)


def row_counts(url: str) -> dict[str, int]:
    """Rows per table, read through a separate engine."""
    engine = make_engine(Settings(database_url=url))
    try:
        with engine.connect() as connection:
            return {
                table.name: int(connection.scalar(select(func.count()).select_from(table)) or 0)
                for table in Base.metadata.sorted_tables
            }
    finally:
        engine.dispose()
