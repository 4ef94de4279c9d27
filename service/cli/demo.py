"""``ranktune demo``: a real rank search end to end, embedded server and local workers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ranktune.service.cli.common import out, user_errors


@user_errors
def demo(
    out_dir: Annotated[
        Path, typer.Option("-o", "--out", help="Where the database and PEFT config go")
    ] = Path("ranktune-out"),
    port: Annotated[
        int, typer.Option(help="Loopback port for the API and dashboard; 0 picks a free one")
    ] = 0,
    exit_when_done: Annotated[
        bool, typer.Option("--exit", help="Return when done instead of serving")
    ] = False,
    seed: Annotated[
        int,
        typer.Option(
            min=0, help="The search's seed (its proposals and proxy runs): another seed, another search"
        ),
    ] = 0,
) -> None:
    """Run a real rank search end to end: embedded server, local worker, tiny VLM, confirmation."""
    from ranktune.service.demo import run_demo

    search = run_demo(out, out_dir, port, exit_when_done, seed=seed)
    if search["state"] != "finished":
        raise typer.Exit(1)
