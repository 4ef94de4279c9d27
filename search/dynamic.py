"""Dynamic rank re-allocation during a proxy fine-tune (HyDRA's dynamic adjustment).

At a fraction of training the worker reports per-site adapter statistics (``delta_norm``: ‖B·A‖_F,
and the current ``rank``). Each adapted site's importance per unit of rank is its norm over √rank
(a random rank-r update's norm grows like √r). Candidates move rank towards important sites with
different strengths γ (target ∝ rank · (importance / mean)^γ), are projected onto the grid under the
same budget, and the performance model, when one can be fitted, picks among them and the current
schedule; without a model γ = 1 is used. Sites without an adapter stay without one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ranktune.search.schedule import RankSchedule
from ranktune.search.space import HierarchicalSpace

STRENGTHS = (0.5, 1.0, 2.0)
DEFAULT_STRENGTH = 1.0

Scorer = Callable[[list[RankSchedule]], list[float]]  # larger is better


def importance(schedule: RankSchedule, stats: Mapping[str, Any]) -> np.ndarray:
    """Importance per unit of rank for each site of ``schedule`` (0 where there is no adapter)."""
    values = np.zeros(len(schedule.sites))
    for i, (site, rank) in enumerate(zip(schedule.sites, schedule.ranks, strict=True)):
        entry = stats.get(site.name)
        if rank and isinstance(entry, Mapping):
            norm = float(entry.get("delta_norm", 0.0) or 0.0)
            values[i] = norm / math.sqrt(rank) if math.isfinite(norm) and norm > 0 else 0.0
    return values


def candidates(
    space: HierarchicalSpace, current: RankSchedule, stats: Mapping[str, Any]
) -> dict[float, RankSchedule]:
    """γ → re-allocated schedule within the space's budget band."""
    ranks = np.asarray([current.rank_of(s.name) for s in space.sites], dtype=np.float64)
    by_name = dict(zip((s.name for s in current.sites), importance(current, stats), strict=True))
    score = np.asarray([by_name.get(s.name, 0.0) for s in space.sites])
    active = (ranks > 0) & (score > 0)
    if not active.any():
        return {}
    relative = np.where(active, score / score[active].mean(), 0.0)
    found = {}
    for gamma in STRENGTHS:
        weights = np.where(active, ranks * relative**gamma, np.where(ranks > 0, ranks * 1e-3, 0.0))
        found[gamma] = space.schedule_for_weights(weights)
    return found


def reallocate(
    space: HierarchicalSpace,
    current: RankSchedule,
    stats: Mapping[str, Any],
    scorer: Scorer | None = None,
) -> tuple[RankSchedule, str]:
    """The re-allocated schedule and a one-line reason (what was chosen and why)."""
    options = candidates(space, current, stats)
    if not options:
        return current, "no adapter statistics: schedule kept"
    if scorer is None:
        return options[DEFAULT_STRENGTH], f"importance re-allocation (gamma {DEFAULT_STRENGTH})"
    pool = [current, *options.values()]
    scores = scorer(pool)
    pick = int(np.argmax(scores))
    if pick == 0:
        return current, "performance model prefers the current schedule"
    gamma = list(options)[pick - 1]
    return pool[pick], f"importance re-allocation (gamma {gamma}) chosen by the performance model"
