"""The ``ranktune`` command: one Typer app over the verb modules of this package.

Each verb module holds plain functions and imports only ``common``; this module registers them,
so nothing in the package imports back into it."""

from __future__ import annotations

import typer

from ranktune.service.cli import client, demo, gguf, plan, server, train

app = typer.Typer(
    name="ranktune",
    help="Find LoRA rank schedules: which layers and modules deserve the ranks under a parameter budget.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(plan.plan)
app.command()(train.train)
app.command("import-gguf")(gguf.import_gguf)
app.command()(demo.demo)
app.command()(server.serve)
app.command("optuna-sync")(server.optuna_sync)
app.add_typer(server.db_app, name="db")
app.add_typer(server.token_app, name="token")
app.command()(client.submit)
app.command()(client.status)
app.command()(client.export)
app.command()(client.worker)


def main() -> None:
    app(prog_name="ranktune")
