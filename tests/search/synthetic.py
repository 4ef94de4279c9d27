"""A synthetic rank-search problem: a known objective over schedules, to test strategies offline.

The objective rewards rank on the deeper language layers' MLP and the vision tower's attention, with
diminishing returns (log), and penalises rank on the early language layers; plus seeded noise.
"""

from __future__ import annotations

import numpy as np

from ranktune.search.schedule import Budget, RankSchedule
from ranktune.search.sites import AdapterSite
from ranktune.search.space import HierarchicalSpace
from ranktune.search.strategies import Proposer, SearchContext, TrialRecord, propose_next

KINDS = {"vision": ("q", "k", "v", "o", "fc1", "fc2"), "language": ("q", "k", "v", "o", "gate", "up", "down")}


def sites(layers: int = 6) -> tuple[AdapterSite, ...]:
    found = []
    for tower, kinds in KINDS.items():
        for layer in range(layers):
            for kind in kinds:
                found.append(AdapterSite(f"{tower}.{layer}.{kind}", tower, layer, kind, 64, 64))  # type: ignore[arg-type]
    found.append(AdapterSite("projector.fc1", "projector", None, "fc1", 64, 64))
    return tuple(found)


def importance(site: AdapterSite, layers: int = 6) -> float:
    if site.tower == "language":
        depth = (site.layer or 0) / (layers - 1)
        mlp = 1.0 if site.kind in ("gate", "up", "down") else 0.2
        return mlp * (2.0 * depth - 0.4)
    if site.tower == "vision":
        return 0.6 if site.kind in ("q", "v") else 0.05
    return 0.3


def objective(schedule: RankSchedule, noise: float = 0.0, seed: int = 0) -> float:
    value = sum(importance(s) * np.log1p(r) for s, r in zip(schedule.sites, schedule.ranks, strict=True))
    return float(value / len(schedule.sites) + noise * np.random.default_rng(seed).normal())


def context(seed: int = 0, max_trials: int = 32, **kwargs: object) -> SearchContext:
    found = sites()
    space = HierarchicalSpace(found, Budget.from_rank(found, 8))
    return SearchContext(space=space, seed=seed, max_trials=max_trials, **kwargs)  # type: ignore[arg-type]


def run_search(
    proposer: Proposer, context: SearchContext, trials: int, parallel: int = 1, noise: float = 0.0
) -> list[TrialRecord]:
    """Sequential batches of ``parallel`` proposals, each evaluated by the synthetic objective."""
    history: list[TrialRecord] = []
    while len(history) < trials:
        batch = []
        for _ in range(min(parallel, trials - len(history))):
            number = len(history) + len(batch)
            p = propose_next(proposer, context, number, (*history, *batch))
            batch.append(TrialRecord(number, "running", p.schedule, p.proxy_seed, vector=p.vector))
        for record in batch:
            value = objective(record.schedule, noise, seed=record.number)
            history.append(
                TrialRecord(
                    record.number, "succeeded", record.schedule, record.proxy_seed, value, {}, record.vector
                )
            )
    return history
