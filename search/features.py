"""Features of rank schedules, for the performance model.

A ``Featurizer`` is built once from a search's sites and budget; it turns a matrix of ranks (one row
per schedule, one column per site) into a matrix of features with numpy only, so scoring thousands
of candidates costs a few matrix products. Features (all scaled by the budget so searches with other
budgets stay comparable):

- ``params``: the schedule's trainable parameters as a share of the budget;
- ``tower.T``: each tower's share of the parameters;
- ``depth.T.qN``: each tower's parameter share per depth quarter (the coarse, per-layer-group level);
- ``kind.T.K``: each tower's share per module kind (the fine level);
- ``profile.T.{mean,std,zero,logrank}``: the depth profile: parameter-weighted mean and spread of
  relative depth, the share of sites without an adapter, the mean log2(1 + rank);
- ``rank.<site>``: the raw rank per site relative to the budget's rank, when there are at most
  ``RAW_SITE_LIMIT`` sites (few trials cannot fit more columns than that sensibly);
- ``importance.{all,T}``: with the importance probe's finding (``search.probe``), the parameters
  weighted by each site's importance relative to the mean, overall and per tower: how much of the
  schedule sits where the probe saw rank pay.

Sites of a schedule that the featurizer does not know (another search with other towers) count as
absent; sites it knows that the schedule lacks count as rank 0. That is what makes transfer between
searches on the same model possible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from ranktune.search.schedule import RankSchedule
from ranktune.search.sites import TOWERS, AdapterSite

RAW_SITE_LIMIT = 64
DEPTH_BINS = 4


class Featurizer:
    def __init__(
        self,
        sites: Sequence[AdapterSite],
        budget_params: int,
        budget_rank: int | None = None,
        importance: Mapping[str, float] | None = None,
    ) -> None:
        if budget_params <= 0:
            raise ValueError("budget_params must be positive")
        self.sites = tuple(sites)
        self.index = {s.name: i for i, s in enumerate(self.sites)}
        self.budget_params = float(budget_params)
        self.budget_rank = float(
            budget_rank or max(1.0, budget_params / sum(s.params_per_rank for s in sites))
        )
        self.costs = np.asarray([s.params_per_rank for s in self.sites], dtype=np.float64)
        depth = _relative_depth(self.sites)
        names: list[str] = ["params"]
        columns: list[NDArray[np.float64]] = []  # site-indicator columns of the linear share features

        def add(name: str, mask: NDArray[np.bool_]) -> None:
            if mask.any():
                names.append(name)
                columns.append(mask.astype(np.float64))

        self.towers = [t for t in TOWERS if any(s.tower == t for s in self.sites)]
        tower_of = np.asarray([s.tower for s in self.sites])
        for tower in self.towers:
            add(f"tower.{tower}", tower_of == tower)
        for tower in self.towers:
            in_tower = tower_of == tower
            bins = np.minimum((depth * DEPTH_BINS).astype(np.int64), DEPTH_BINS - 1)
            for q in range(DEPTH_BINS):
                add(f"depth.{tower}.q{q}", in_tower & (bins == q))
        kinds = sorted({(s.tower, s.kind) for s in self.sites}, key=lambda k: (TOWERS.index(k[0]), k[1]))
        kind_of = np.asarray([s.kind for s in self.sites])
        for tower, kind in kinds:
            add(f"kind.{tower}.{kind}", (tower_of == tower) & (kind_of == kind))
        self._share = np.stack(columns, axis=1) if columns else np.zeros((len(self.sites), 0))
        self._tower_masks = [(tower_of == t).astype(np.float64) for t in self.towers]
        self._depth = depth
        for tower in self.towers:
            names += [f"profile.{tower}.{stat}" for stat in ("mean", "std", "zero", "logrank")]
        self.raw = len(self.sites) <= RAW_SITE_LIMIT
        if self.raw:
            names += [f"rank.{s.name}" for s in self.sites]
        self._importance = self._importance_columns(importance, tower_of)
        if self._importance.shape[1]:
            names += ["importance.all", *(f"importance.{t}" for t in self.towers)]
        self.names: tuple[str, ...] = tuple(names)

    def _importance_columns(
        self, importance: Mapping[str, float] | None, tower_of: NDArray[np.str_]
    ) -> NDArray[np.float64]:
        """Sites × (1 + towers): each site's probe importance relative to the mean, overall and per
        tower; no columns without a probe (or when it found nothing)."""
        if not importance:
            return np.zeros((len(self.sites), 0))
        values = np.asarray([max(0.0, float(importance.get(s.name, 0.0))) for s in self.sites])
        if not np.isfinite(values).all() or values.max() <= 0.0:
            return np.zeros((len(self.sites), 0))
        relative = values / values[values > 0].mean()
        return np.stack([relative, *(relative * (tower_of == t) for t in self.towers)], axis=1)

    def ranks_of(self, schedules: Sequence[RankSchedule]) -> NDArray[np.float64]:
        """The rank matrix (schedules × this featurizer's sites)."""
        matrix = np.zeros((len(schedules), len(self.sites)), dtype=np.float64)
        for row, schedule in enumerate(schedules):
            for site, rank in zip(schedule.sites, schedule.ranks, strict=True):
                column = self.index.get(site.name)
                if column is not None:
                    matrix[row, column] = rank
        return matrix

    def transform(self, ranks: NDArray[np.float64]) -> NDArray[np.float64]:
        """Features of every row of a rank matrix."""
        ranks = np.atleast_2d(np.asarray(ranks, dtype=np.float64))
        params = ranks * self.costs
        total = params.sum(axis=1, keepdims=True)
        parts = [total / self.budget_params, params @ self._share / self.budget_params]
        for mask in self._tower_masks:
            tower_params = params * mask
            mass = tower_params.sum(axis=1, keepdims=True)
            weight = np.divide(tower_params, mass, out=np.zeros_like(tower_params), where=mass > 0)
            mean = weight @ self._depth
            spread = np.sqrt(np.maximum(weight @ self._depth**2 - mean**2, 0.0))
            count = mask.sum()
            zero = ((ranks == 0) * mask).sum(axis=1) / count
            logrank = (np.log2(1.0 + ranks) * mask).sum(axis=1) / count
            parts.append(np.stack([mean, spread, zero, logrank], axis=1))
        if self.raw:
            parts.append(ranks / self.budget_rank)
        if self._importance.shape[1]:  # rank mass where the probe saw importance
            parts.append(params @ self._importance / self.budget_params)
        return np.concatenate(parts, axis=1)

    def features(self, schedules: Sequence[RankSchedule]) -> NDArray[np.float64]:
        return self.transform(self.ranks_of(schedules))


def _relative_depth(sites: Sequence[AdapterSite]) -> NDArray[np.float64]:
    """Each site's layer position within its tower in [0, 1) (0.5 for layerless sites)."""
    layers: dict[str, list[int]] = {}
    for site in sites:
        if site.layer is not None:
            layers.setdefault(site.tower, []).append(site.layer)
    position = {t: {layer: i for i, layer in enumerate(sorted(set(ls)))} for t, ls in layers.items()}
    depth = []
    for site in sites:
        if site.layer is None:
            depth.append(0.5)
        else:
            count = len(position[site.tower])
            depth.append((position[site.tower][site.layer] + 0.5) / count)
    return np.asarray(depth, dtype=np.float64)
