"""The hierarchical parametrization Optuna samples: a flat vector of floats in [0, 1] → a schedule.

Coarse weights per (tower, layer group) times fine shares per (tower, kind) give each site a
weight; ``search.projection`` turns the weights into grid ranks inside the budget band. When a
vector's projection falls under the 97% floor (rare, on coarse grids), it is blended towards
uniform weights until it fits; at the end of that road lies the uniform schedule itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ranktune.search.errors import BudgetError, ScheduleError
from ranktune.search.grid import RankGrid
from ranktune.search.projection import project
from ranktune.search.schedule import AlphaRule, Budget, RankSchedule
from ranktune.search.sites import TOWERS, AdapterSite

DEFAULT_LAYER_GROUPS = 4
_BLENDS = (0.25, 0.5, 0.75)


@dataclass(frozen=True)
class Dimension:
    """One coordinate of the search vector, named the way Optuna will record it."""

    name: str
    low: float = 0.0
    high: float = 1.0


class HierarchicalSpace:
    """Maps search vectors to rank schedules for one model's sites, budget and grid."""

    def __init__(
        self,
        sites: Sequence[AdapterSite],
        budget: Budget,
        grid: RankGrid | None = None,
        layer_groups: int = DEFAULT_LAYER_GROUPS,
        alpha: AlphaRule | None = None,
    ) -> None:
        if not sites:
            raise BudgetError("space: there are no sites to search", field="space")
        if layer_groups < 1:
            raise BudgetError(f"space.layer_groups: must be >= 1, got {layer_groups}", field="space")
        self.sites = tuple(sites)
        self.budget = budget
        self.grid = grid or RankGrid()
        self.alpha = alpha or AlphaRule()
        self._grid = np.asarray(self.grid.values, dtype=np.int64)
        self._costs = np.asarray([s.params_per_rank for s in self.sites], dtype=np.int64)
        self._cap_index = np.asarray(
            [self.grid.values.index(self.grid.largest_at_most(s.max_rank)) for s in self.sites],
            dtype=np.int64,
        )
        groups = self._layer_groups(layer_groups)
        coarse_keys = sorted(
            {(s.tower, g) for s, g in zip(self.sites, groups, strict=True)},
            key=lambda k: (TOWERS.index(k[0]), k[1]),
        )
        fine_keys = sorted({(s.tower, s.kind) for s in self.sites}, key=lambda k: (TOWERS.index(k[0]), k[1]))
        self.dimensions: tuple[Dimension, ...] = tuple(
            [Dimension(f"coarse.{t}.g{g}") for t, g in coarse_keys]
            + [Dimension(f"fine.{t}.{k}") for t, k in fine_keys]
        )
        coarse_pos = {key: i for i, key in enumerate(coarse_keys)}
        fine_pos = {key: len(coarse_keys) + i for i, key in enumerate(fine_keys)}
        self._coarse_of = np.asarray(
            [coarse_pos[(s.tower, g)] for s, g in zip(self.sites, groups, strict=True)]
        )
        self._fine_of = np.asarray([fine_pos[(s.tower, s.kind)] for s in self.sites])
        self.group_of = tuple(groups)
        self._anchor = self._make_anchor()

    def _layer_groups(self, layer_groups: int) -> list[int]:
        """Split each tower's layers into up to ``layer_groups`` contiguous groups."""
        layers_by_tower: dict[str, list[int]] = {}
        for site in self.sites:
            if site.layer is not None:
                layers_by_tower.setdefault(site.tower, []).append(site.layer)
        position = {
            t: {layer: i for i, layer in enumerate(sorted(set(ls)))} for t, ls in layers_by_tower.items()
        }
        groups = []
        for site in self.sites:
            if site.layer is None:
                groups.append(0)
                continue
            count = len(position[site.tower])
            n_groups = min(layer_groups, count)
            groups.append(position[site.tower][site.layer] * n_groups // count)
        return groups

    def _make_anchor(self) -> RankSchedule:
        """The schedule of last resort: uniform rank for rank budgets, even weights otherwise."""
        adaptable = self._costs[self._cap_index > 0]
        smallest = int(self._grid[1]) * int(adaptable.min()) if adaptable.size else None
        if smallest is None or smallest > self.budget.params:
            raise BudgetError(
                f"budget: {self.budget.params:,} params is too small for any adapter on grid {self.grid}"
                + (f" (the cheapest one costs {smallest:,})" if smallest else "")
            )
        if self.budget.uniform_rank is not None:
            anchor = RankSchedule.uniform(self.sites, self.budget.uniform_rank, self.grid, self.alpha)
        else:
            anchor = self._schedule(
                project(
                    np.ones(len(self.sites)),
                    self._cap_index,
                    self._costs,
                    self._grid,
                    self.budget.params,
                    fill_zero_weight=True,
                )
            )
        if not self.budget.admits(anchor.parameter_count):
            raise BudgetError(
                f"budget: no schedule on grid {self.grid} lands within 97-100% of {self.budget.params:,} "
                f"params (closest found: {anchor.parameter_count:,}); use a finer grid or another budget"
            )
        return anchor

    def _schedule(self, index: np.ndarray) -> RankSchedule:
        return RankSchedule(self.sites, tuple(int(r) for r in self._grid[index]), self.alpha)

    def site_weights(self, vector: Sequence[float]) -> np.ndarray:
        values = np.asarray(vector, dtype=np.float64)
        if values.shape != (len(self.dimensions),):
            raise ScheduleError(
                f"vector: expected {len(self.dimensions)} values, got {values.size}", field="vector"
            )
        if not np.all(np.isfinite(values)) or values.min() < 0.0 or values.max() > 1.0:
            raise ScheduleError("vector: every value must be a finite number in [0, 1]", field="vector")
        return values[self._coarse_of] * values[self._fine_of]

    def to_schedule(self, vector: Sequence[float]) -> RankSchedule:
        """Deterministic: the same vector always gives the same schedule, within the budget band."""
        return self.schedule_for_weights(self.site_weights(vector))

    def schedule_for_weights(self, weights: np.ndarray) -> RankSchedule:
        """Per-site continuous weights (any positive scale) projected onto the grid and budget."""
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (len(self.sites),) or not np.all(np.isfinite(weights)) or weights.min() < 0:
            raise ScheduleError(
                f"weights: expected {len(self.sites)} finite non-negative values", field="schedule"
            )
        eligible = weights[self._cap_index > 0]
        if eligible.size == 0 or eligible.max() <= 0.0:
            return self._anchor
        even = math.isclose(float(eligible.min()), float(eligible.max()), rel_tol=1e-12)
        if even and self.budget.uniform_rank is not None:
            return self._anchor
        mean = float(eligible.mean())
        for blend in (0.0, *_BLENDS):
            mixed = weights if blend == 0.0 else (1 - blend) * weights + blend * mean
            index = project(
                mixed,
                self._cap_index,
                self._costs,
                self._grid,
                self.budget.params,
                fill_zero_weight=blend > 0.0,
            )
            schedule = self._schedule(index)
            if self.budget.admits(schedule.parameter_count):
                return schedule
        return self._anchor

    def uniform_vector(self) -> list[float]:
        return [1.0] * len(self.dimensions)

    def uniform(self) -> RankSchedule:
        return self._anchor

    def random_vector(self, rng: np.random.Generator) -> list[float]:
        return [float(v) for v in rng.random(len(self.dimensions))]

    def random(self, seed: int | np.random.Generator = 0) -> RankSchedule:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return self.to_schedule(self.random_vector(rng))
