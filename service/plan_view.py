"""Render a rank schedule as a table: one per tower, layers as rows, module kinds as columns."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table

from ranktune.search.schedule import Budget, RankSchedule
from ranktune.search.sites import TOWERS, kind_sort_key

HEAT = ("grey50", "blue", "dodger_blue1", "green3", "yellow1", "dark_orange", "red1", "magenta")


def print_schedule(
    console: Console,
    schedule: RankSchedule,
    budget: Budget | None = None,
    title: str = "",
    heat: bool = False,
) -> None:
    console.print(schedule_tables(schedule, heat))
    console.print(schedule_summary(schedule, budget, title), style="bold", soft_wrap=True, highlight=False)


def schedule_summary(schedule: RankSchedule, budget: Budget | None = None, title: str = "") -> str:
    total = schedule.parameter_count
    spent = budget.describe(total) if budget else f"{total:,} trainable params"
    active = sum(1 for r in schedule.ranks if r > 0)
    return f"{title}{active}/{len(schedule.ranks)} sites adapted, {spent}"


def heat_style(rank: int, ranks: list[int]) -> str:
    """A colour per distinct rank, from cold (0) to hot (the largest in the schedule)."""
    levels = sorted(set(ranks))
    step = (len(HEAT) - 1) / max(1, len(levels) - 1)
    return f"bold {HEAT[round(levels.index(rank) * step)]}"


def schedule_tables(schedule: RankSchedule, heat: bool = False) -> Group:
    parts: list[Table] = []
    pairs = list(zip(schedule.sites, schedule.ranks, strict=True))
    all_ranks = list(schedule.ranks)

    def cell(ranks: list[int]) -> str:
        text = "/".join(str(r) for r in ranks)
        return f"[{heat_style(max(ranks), all_ranks)}]{text}[/]" if heat else text

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
            cells = [cell(by_kind[k]) if k in by_kind else "-" for k in kinds]
            table.add_row("-" if layer is None else str(layer), *cells, f"{row_params[layer]:,}")
        parts.append(table)
    return Group(*parts)
