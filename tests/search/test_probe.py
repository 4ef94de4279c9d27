"""The importance probe's pure half: its over-ranked schedule, importance from adapter statistics,
the allocation under the budget, its place in the proposals, and the performance model's features."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ranktune.search import probe
from ranktune.search.features import Featurizer
from ranktune.search.schedule import RankSchedule
from ranktune.search.strategies import TrialRecord, get_proposer, propose_next
from tests.search.synthetic import context


def mlp_heavy_stats(schedule: RankSchedule) -> dict[str, dict[str, float]]:
    """As a worker reports them: ‖B·A‖ large on the language MLP, small elsewhere."""
    found = {}
    for site, rank in zip(schedule.sites, schedule.ranks, strict=True):
        per_rank = 4.0 if site.tower == "language" and site.kind in ("gate", "up", "down") else 0.1
        found[site.name] = {"delta_norm": per_rank * float(np.sqrt(rank)), "rank": rank}
    return found


def mlp_share(schedule: RankSchedule) -> float:
    params = [s.params_per_rank * r for s, r in zip(schedule.sites, schedule.ranks, strict=True)]
    mlp = [p for s, p in zip(schedule.sites, params, strict=True) if s.kind in ("gate", "up", "down")]
    return sum(mlp) / sum(params)


def test_the_probe_is_over_ranked_on_every_site_within_each_sites_limit() -> None:
    space = context().space
    schedule = probe.probe_schedule(space)
    assert set(schedule.ranks) == {16} and set(space.uniform().ranks) == {8}
    assert schedule.parameter_count == 2 * space.uniform().parameter_count


def test_importance_allocates_rank_where_the_probe_saw_it_pay_under_the_budget() -> None:
    space = context().space
    found = probe.site_importance(probe.probe_schedule(space), mlp_heavy_stats(probe.probe_schedule(space)))
    assert found[next(s.name for s in space.sites if s.kind == "up")] == pytest.approx(4.0)
    allocated = probe.allocate(space, found)
    assert allocated is not None
    assert space.budget.admits(allocated.parameter_count)
    assert mlp_share(allocated) > mlp_share(space.uniform()) + 0.3
    assert probe.allocate(space, {}) is None and probe.allocate(space, dict.fromkeys(found, 0.0)) is None


def test_the_allocations_come_right_after_uniform_then_the_strategy() -> None:
    ctx = context(seed=3)
    scores = probe.site_importance(
        probe.probe_schedule(ctx.space), mlp_heavy_stats(probe.probe_schedule(ctx.space))
    )
    ctx = replace(ctx, importance=scores)
    proposer = get_proposer("random")
    first = propose_next(proposer, ctx, 0, ())
    assert first.schedule == ctx.space.uniform()
    history = (TrialRecord(0, "succeeded", first.schedule, first.proxy_seed, 0.5),)
    expected = [probe.allocate(ctx.space, scores, strength) for strength in probe.STRENGTHS]
    assert len({e.ranks for e in expected if e}) == 3  # three contrasts, three schedules
    shares = [mlp_share(e) for e in expected if e]
    assert shares[1] < shares[0] < shares[2]  # importance**0.5 spreads rank wider, **2 narrower
    for number, allocated in enumerate(expected, start=1):
        proposal = propose_next(proposer, ctx, number, history)
        assert proposal.schedule == allocated
        history += (TrialRecord(number, "running", proposal.schedule, proposal.proxy_seed),)
    after = propose_next(proposer, ctx, 4, history)  # the strategy takes over, as without a probe
    assert after == propose_next(proposer, replace(ctx, importance=None), 4, history)


def test_the_model_sees_rank_mass_weighted_by_importance() -> None:
    ctx = context()
    space = ctx.space
    importance = probe.site_importance(
        probe.probe_schedule(space), mlp_heavy_stats(probe.probe_schedule(space))
    )
    plain = Featurizer(space.sites, space.budget.params, space.budget.uniform_rank)
    with_probe = Featurizer(space.sites, space.budget.params, space.budget.uniform_rank, importance)
    assert with_probe.names[: len(plain.names)] == plain.names
    towers = ("vision", "projector", "language")
    assert with_probe.names[len(plain.names) :] == ("importance.all", *(f"importance.{t}" for t in towers))
    schedules = [space.uniform(), probe.allocate(space, importance)]
    features = with_probe.features(schedules)  # type: ignore[arg-type]
    np.testing.assert_allclose(features[:, : len(plain.names)], plain.features(schedules))  # type: ignore[arg-type]
    overall = features[:, with_probe.names.index("importance.all")]
    assert overall[1] > 1.5 * overall[0]  # the allocation puts its parameters where importance is
    assert (
        Featurizer(space.sites, space.budget.params, None, dict.fromkeys(importance, 0.0)).names
        == plain.names
    )
