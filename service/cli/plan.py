"""``ranktune plan``: a schedule for a model under a budget, planned on the meta device."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import Annotated

import typer

from ranktune.search.errors import RanktuneError
from ranktune.search.grid import DEFAULT_GRID, RankGrid
from ranktune.service.cli.common import out, user_errors


class Strategy(StrEnum):
    uniform = "uniform"
    random = "random"


class PlanFormat(StrEnum):
    table = "table"
    json = "json"
    peft = "peft"


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
    from ranktune.search.peft_format import to_peft_config
    from ranktune.service.plan_view import print_schedule
    from ranktune.service.planning import make_plan

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
