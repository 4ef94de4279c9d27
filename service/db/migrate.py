"""Alembic, driven from code: ``ranktune db upgrade``, and the "is this database at head?" check.

The Alembic environment lives in the ``migrations`` package (installed beside ``service``), so the
server finds its migrations without an ``alembic.ini`` in the working directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from ranktune.service.errors import DatabaseError
from ranktune.service.settings import Settings, redact_url


def migrations_dir() -> Path:
    from ranktune import migrations

    return Path(migrations.__file__).parent


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    if head is None:
        raise DatabaseError("migrations: the migrations package has no revisions")
    return head


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as e:
        raise DatabaseError(
            f"database: cannot read {redact_url(str(engine.url))} ({e.__class__.__name__})"
        ) from e


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None
    head: str

    @property
    def at_head(self) -> bool:
        return self.current == self.head

    def describe(self) -> str:
        return f"database schema is at revision {self.current or '(none)'}, the code needs {self.head}"


def schema_status(engine: Engine) -> SchemaStatus:
    return SchemaStatus(current_revision(engine), head_revision())


def upgrade(engine: Engine, revision: str = "head") -> SchemaStatus:
    """Apply every migration up to ``revision`` on the engine's database."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except SQLAlchemyError as e:
        raise DatabaseError(f"database: upgrade of {redact_url(str(engine.url))} failed ({e})") from e
    return schema_status(engine)


def upgrade_settings(settings: Settings) -> SchemaStatus:
    from ranktune.service.db.engine import make_engine

    engine = make_engine(settings)
    try:
        return upgrade(engine)
    finally:
        engine.dispose()
