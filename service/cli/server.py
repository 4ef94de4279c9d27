"""Server-side verbs: ``serve``, ``optuna-sync``, ``db upgrade`` and ``token create|revoke|list``.

They act on the database at ``RANKTUNE_DATABASE_URL`` directly (settings from ``RANKTUNE_*``)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from ranktune.service.cli.common import err, out, user_errors

db_app = typer.Typer(help="The database schema (Alembic migrations).", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (written straight to the database).", no_args_is_help=True)


class TokenRole(StrEnum):
    admin = "admin"
    user = "user"
    worker = "worker"


@user_errors
def serve(
    host: Annotated[
        str | None, typer.Option(help="Bind address (default RANKTUNE_HOST or 127.0.0.1)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default RANKTUNE_PORT or 8600)")] = None,
) -> None:
    """Run the REST API server (refuses a database that is not migrated to the head)."""
    from ranktune.service.server import run_serve
    from ranktune.service.settings import Settings

    settings = Settings()
    updates = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    run_serve(settings.model_copy(update=updates))


@user_errors
def optuna_sync(
    interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between passes of the loop (ignored with --once)")
    ] = 30.0,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit")] = False,
) -> None:
    """Mirror finished trials into Optuna studies for optuna-dashboard, from a process of its own.

    The studies are named ranktune-search-ID: on PostgreSQL in the schema ranktune_optuna of the same
    database, on SQLite in the file NAME.optuna.db beside the database. Each trial is written once.
    """
    from ranktune.service.server import run_optuna_sync
    from ranktune.service.settings import Settings

    run_optuna_sync(Settings(), interval, once, out)


@db_app.command("upgrade")
@user_errors
def db_upgrade() -> None:
    """Apply every migration to the database at RANKTUNE_DATABASE_URL."""
    from ranktune.service.server import run_db_upgrade
    from ranktune.service.settings import Settings

    run_db_upgrade(Settings(), err)


@token_app.command("create")
@user_errors
def token_create(
    role: Annotated[TokenRole, typer.Option(help="admin, user or worker")],
    name: Annotated[str, typer.Option(help="A unique name, e.g. the person or the worker pool")],
) -> None:
    """Create a token and print it once on stdout."""
    from ranktune.service.server import run_token_create
    from ranktune.service.settings import Settings

    run_token_create(Settings(), name, role.value, out, err)


@token_app.command("revoke")
@user_errors
def token_revoke(name: Annotated[str, typer.Argument(help="The token's name")]) -> None:
    """Revoke a token: requests carrying it get 401 from now on."""
    from ranktune.service.server import run_token_revoke
    from ranktune.service.settings import Settings

    run_token_revoke(Settings(), name, err)


@token_app.command("list")
@user_errors
def token_list() -> None:
    """List tokens (names, roles, dates; never the tokens themselves)."""
    from ranktune.service.server import run_token_list
    from ranktune.service.settings import Settings

    run_token_list(Settings(), out)
