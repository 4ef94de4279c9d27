"""The ``ranktune`` command line. Bad input exits with code 2 and one line naming the problem."""

from __future__ import annotations

import functools
import json
import sys
import warnings
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console

from search.errors import RanktuneError
from search.grid import DEFAULT_GRID, RankGrid

app = typer.Typer(
    name="ranktune",
    help="Find LoRA rank schedules: which layers and modules deserve the ranks under a parameter budget.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


def user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Print ranktune's own errors as one line and exit 2; print warnings as one line each."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return command(*args, **kwargs)
            except RanktuneError as e:
                err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
                raise typer.Exit(2) from None
            finally:
                for w in caught:
                    if issubclass(w.category, UserWarning) and w.filename.find("transformers") < 0:
                        err.print(f"[yellow]warning:[/] {w.message}", highlight=False, soft_wrap=True)

    return wrapper


class Strategy(StrEnum):
    uniform = "uniform"
    random = "random"


class PlanFormat(StrEnum):
    table = "table"
    json = "json"
    peft = "peft"


@app.command()
@user_errors
def plan(
    model: Annotated[
        str, typer.Option(help="builtin:tiny-vlm, builtin:minilm, a local model dir or a hub id")
    ],
    budget_rank: Annotated[
        int | None, typer.Option(help="Budget = params of uniform-rank LoRA on the searched sites")
    ] = None,
    budget_params: Annotated[int | None, typer.Option(help="Budget as an absolute parameter count")] = None,
    grid: Annotated[str, typer.Option(help="Allowed ranks, comma-separated")] = ",".join(
        map(str, DEFAULT_GRID)
    ),
    strategy: Annotated[Strategy, typer.Option(help="uniform baseline or a random hierarchical sample")] = (
        Strategy.uniform
    ),
    seed: Annotated[int, typer.Option(help="Seed for --strategy random")] = 0,
    towers: Annotated[str | None, typer.Option(help="Only these towers, e.g. vision,language")] = None,
    layer_groups: Annotated[int, typer.Option(help="Coarse layer groups per tower")] = 4,
    format: Annotated[PlanFormat, typer.Option("--format", help="table, json (schedule) or peft")] = (
        PlanFormat.table
    ),
) -> None:
    """Plan a rank schedule for a model under a budget (no weights are loaded)."""
    from search.peft_format import to_peft_config
    from service.plan_view import print_schedule
    from service.planning import make_plan

    if budget_rank is None and budget_params is None:
        raise RanktuneError("budget: pass --budget-rank R or --budget-params N")
    result = make_plan(
        model,
        budget_rank=budget_rank,
        budget_params=budget_params,
        grid=RankGrid.parse(grid),
        strategy=strategy.value,
        seed=seed,
        towers=[t.strip() for t in towers.split(",")] if towers else None,
        layer_groups=layer_groups,
    )
    if format is PlanFormat.json:
        sys.stdout.write(result.schedule.dumps() + "\n")
    elif format is PlanFormat.peft:
        sys.stdout.write(json.dumps(to_peft_config(result.schedule), indent=2) + "\n")
    else:
        print_schedule(out, result.schedule, result.budget, title=f"{model}: ")


class Method(StrEnum):
    lora = "lora"
    dmlora = "dmlora"


@app.command()
@user_errors
def train(
    model: Annotated[str, typer.Option(help="builtin:tiny-vlm, builtin:minilm or a local model directory")],
    task: Annotated[str, typer.Option(help="builtin:digits-vqa, builtin:minilm-stdlib, a JSONL file or dir")],
    out: Annotated[Path, typer.Option(help="Directory for the PEFT adapter and the result")],
    schedule: Annotated[Path | None, typer.Option(help="Schedule JSON or PEFT adapter_config.json")] = None,
    uniform_rank: Annotated[int | None, typer.Option(help="Uniform rank on every site instead")] = None,
    method: Annotated[Method, typer.Option(help="lora or dmlora")] = Method.lora,
    steps: Annotated[int, typer.Option(help="Optimizer steps")] = 200,
    lr: Annotated[float, typer.Option(help="Peak learning rate")] = 1e-3,
    batch_size: Annotated[int, typer.Option(help="Examples per step")] = 32,
    seed: Annotated[int, typer.Option(help="Seed (CPU runs are bit-for-bit repeatable)")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N]")] = "auto",
    eval_every: Annotated[int, typer.Option(help="Evaluate every N steps (0: at the end)")] = 0,
) -> None:
    """Fine-tune one schedule and write the adapter in PEFT format."""
    from service.train_command import run_train

    run_train(
        err,
        model=model,
        task=task,
        schedule_file=schedule,
        uniform_rank=uniform_rank,
        method_kind=method.value,
        steps=steps,
        out=out,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        device=device,
        eval_every=eval_every,
    )


@app.command()
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
) -> None:
    """Run a real rank search end to end: embedded server, local worker, tiny VLM, confirmation."""
    from service.demo import run_demo

    search = run_demo(out, out_dir, port, exit_when_done)
    if search["state"] != "finished":
        raise typer.Exit(1)


db_app = typer.Typer(help="The database schema (Alembic migrations).", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (written straight to the database).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")


class TokenRole(StrEnum):
    admin = "admin"
    user = "user"
    worker = "worker"


@app.command()
@user_errors
def serve(
    host: Annotated[
        str | None, typer.Option(help="Bind address (default RANKTUNE_HOST or 127.0.0.1)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default RANKTUNE_PORT or 8600)")] = None,
) -> None:
    """Run the REST API server (refuses a database that is not migrated to the head)."""
    from service.server import run_serve
    from service.settings import Settings

    settings = Settings()
    updates = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    run_serve(settings.model_copy(update=updates))


@db_app.command("upgrade")
@user_errors
def db_upgrade() -> None:
    """Apply every migration to the database at RANKTUNE_DATABASE_URL."""
    from service.server import run_db_upgrade
    from service.settings import Settings

    run_db_upgrade(Settings(), err)


@token_app.command("create")
@user_errors
def token_create(
    role: Annotated[TokenRole, typer.Option(help="admin, user or worker")],
    name: Annotated[str, typer.Option(help="A unique name, e.g. the person or the worker pool")],
) -> None:
    """Create a token and print it once on stdout."""
    from service.server import run_token_create
    from service.settings import Settings

    run_token_create(Settings(), name, role.value, out, err)


@token_app.command("revoke")
@user_errors
def token_revoke(name: Annotated[str, typer.Argument(help="The token's name")]) -> None:
    """Revoke a token: requests carrying it get 401 from now on."""
    from service.server import run_token_revoke
    from service.settings import Settings

    run_token_revoke(Settings(), name, err)


@token_app.command("list")
@user_errors
def token_list() -> None:
    """List tokens (names, roles, dates; never the tokens themselves)."""
    from service.server import run_token_list
    from service.settings import Settings

    run_token_list(Settings(), out)


def main() -> None:
    app()


# The client verbs (worker, submit, status, export) register themselves on ``app``.
from service import client_cli  # noqa: E402, F401

if __name__ == "__main__":
    main()
