"""The importance probe: one short over-ranked LoRA run that says where rank pays, at a search's start.

A search with ``probe`` leases one trial of kind ``probe`` right after the uniform baseline: the
same worker code trains every site at ``RANK_FACTOR`` times the budget's rank (snapped to the grid)
for the proxy's length and reports per-site adapter statistics at its end (‖B·A‖_F and rank, as the
dynamic mode does). Its importance per unit of rank (``search.dynamic.importance``: ‖B·A‖ / √rank)
is AdaLoRA's and HyDRA's signal read once, without re-training: ``allocate`` turns it into a
schedule with rank in proportion to importance under the exact budget. The search proposes it right
after uniform, then the same at a weaker and a stronger contrast (importance**0.5, **2: a prior over
how far to trust the probe; ``strategies.propose_next``), and the performance model gets it as
features.

Pure functions over frozen inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ranktune.search.dynamic import importance
from ranktune.search.schedule import RankSchedule
from ranktune.search.space import HierarchicalSpace

RANK_FACTOR = 2  # the probe's rank per site, in multiples of the budget's (uniform) rank
STRENGTHS = (1.0, 0.5, 2.0)  # rank in proportion to importance**strength: proposed in this order


def probe_schedule(space: HierarchicalSpace) -> RankSchedule:
    """Every site at ``RANK_FACTOR`` x the uniform schedule's largest rank (the largest grid value at or
    below it and the site's own limit); over the budget on purpose: the probe is not a candidate."""
    uniform = space.uniform()
    wanted = RANK_FACTOR * max(uniform.ranks)
    ranks = tuple(space.grid.largest_at_most(min(wanted, s.max_rank)) for s in uniform.sites)
    return RankSchedule(uniform.sites, ranks, uniform.alpha)


def site_importance(schedule: RankSchedule, stats: Mapping[str, Any]) -> dict[str, float]:
    """Site name → importance per unit of rank from a probe's statistics (sites it lacks: 0)."""
    values = importance(schedule, stats)
    return {site.name: float(v) for site, v in zip(schedule.sites, values, strict=True)}


def allocate(
    space: HierarchicalSpace, scores: Mapping[str, float], strength: float = STRENGTHS[0]
) -> RankSchedule | None:
    """Rank in proportion to importance**strength under the space's budget; None when nothing scored."""
    weights = np.asarray([max(0.0, float(scores.get(s.name, 0.0))) for s in space.sites]) ** strength
    if not np.isfinite(weights).all() or weights.max() <= 0.0:
        return None
    return space.schedule_for_weights(weights)
