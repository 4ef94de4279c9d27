"""Turn a model spec and budget settings into sites, a search space and a schedule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ranktune.search.errors import SiteError
from ranktune.search.grid import RankGrid
from ranktune.search.schedule import AlphaRule, Budget, RankSchedule
from ranktune.search.sites import TOWERS, AdapterSite
from ranktune.search.space import DEFAULT_LAYER_GROUPS, HierarchicalSpace

Strategy = Literal["uniform", "random"]


@dataclass(frozen=True)
class Plan:
    model: str
    space: HierarchicalSpace
    schedule: RankSchedule

    @property
    def budget(self) -> Budget:
        return self.space.budget


def select_towers(sites: Sequence[AdapterSite], towers: Sequence[str] | None) -> tuple[AdapterSite, ...]:
    if not towers:
        return tuple(sites)
    unknown = [t for t in towers if t not in TOWERS]
    if unknown:
        raise SiteError(f"towers: {unknown[0]!r} is not one of {', '.join(TOWERS)}", field="towers")
    chosen = tuple(s for s in sites if s.tower in towers)
    if not chosen:
        raise SiteError(f"towers: the model has no sites in {', '.join(towers)}", field="towers")
    return chosen


def build_space(
    sites: Sequence[AdapterSite],
    *,
    budget_rank: int | None,
    budget_params: int | None,
    grid: RankGrid,
    layer_groups: int = DEFAULT_LAYER_GROUPS,
    alpha: AlphaRule | None = None,
) -> HierarchicalSpace:
    if (budget_rank is None) == (budget_params is None):
        raise SiteError("budget: give exactly one of a uniform rank or a parameter count", field="budget")
    budget = (
        Budget.from_rank(sites, budget_rank, grid)
        if budget_rank is not None
        else Budget(int(budget_params or 0))
    )
    return HierarchicalSpace(sites, budget, grid, layer_groups=layer_groups, alpha=alpha)


def sites_for_search(model: str, task: str | None = None) -> tuple[AdapterSite, ...]:
    """The adapter sites a search over ``model`` fine-tuned on ``task`` will adapt.

    Built on the ``meta`` device: no weights are read. Imports torch lazily.
    """
    from ranktune.trainer.sites import discover_sites

    return discover_sites(model)


def make_plan(
    model: str,
    *,
    budget_rank: int | None = None,
    budget_params: int | None = None,
    grid: RankGrid | None = None,
    strategy: Strategy = "uniform",
    seed: int = 0,
    towers: Sequence[str] | None = None,
    layer_groups: int = DEFAULT_LAYER_GROUPS,
    alpha: AlphaRule | None = None,
) -> Plan:
    from ranktune.trainer.sites import discover_sites  # torch stays out of the service's import path

    sites = select_towers(discover_sites(model), towers)
    space = build_space(
        sites,
        budget_rank=budget_rank,
        budget_params=budget_params,
        grid=grid or RankGrid(),
        layer_groups=layer_groups,
        alpha=alpha,
    )
    schedule = space.uniform() if strategy == "uniform" else space.random(seed)
    return Plan(model=model, space=space, schedule=schedule)
