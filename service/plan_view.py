"""Render a rank schedule as a table: one per tower, layers as rows, module kinds as columns."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table

from search.schedule import Budget, RankSchedule
from search.sites import TOWERS, kind_sort_key


def print_schedule(
    console: Console, schedule: RankSchedule, budget: Budget | None = None, title: str = ""
) -> None:
    console.print(schedule_tables(schedule))
    console.print(schedule_summary(schedule, budget, title), style="bold", soft_wrap=True, highlight=False)


def schedule_summary(schedule: RankSchedule, budget: Budget | None = None, title: str = "") -> str:
    total = schedule.parameter_count
    spent = budget.describe(total) if budget else f"{total:,} trainable params"
    active = sum(1 for r in schedule.ranks if r > 0)
    return f"{title}{active}/{len(schedule.ranks)} sites adapted, {spent}"


def schedule_tables(schedule: RankSchedule) -> Group:
    parts: list[Table] = []
    pairs = list(zip(schedule.sites, schedule.ranks, strict=True))
    for tower in TOWERS:
        in_tower = [(s, r) for s, r in pairs if s.tower == tower]
        if not in_tower:
            continue
        kinds = sorted({s.kind for s, _ in in_tower}, key=kind_sort_key)
        table = Table(title=f"{tower} ({len(in_tower)} sites)", title_justify="left")
        table.add_column("layer", justify="right")
        for kind in kinds:
            table.add_column(kind, justify="right")
        table.add_column("params", justify="right")
        rows: dict[int | None, dict[str, list[int]]] = {}
        row_params: dict[int | None, int] = {}
        for site, rank in in_tower:
            rows.setdefault(site.layer, {}).setdefault(site.kind, []).append(rank)
            row_params[site.layer] = row_params.get(site.layer, 0) + rank * site.params_per_rank
        for layer, by_kind in sorted(rows.items(), key=lambda item: -1 if item[0] is None else item[0]):
            cells = ["/".join(str(r) for r in by_kind[k]) if k in by_kind else "-" for k in kinds]
            table.add_row("-" if layer is None else str(layer), *cells, f"{row_params[layer]:,}")
        parts.append(table)
    return Group(*parts)
