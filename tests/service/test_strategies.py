"""The proposer interface in search/strategies.py, on frozen values only (no database)."""

from __future__ import annotations

from typing import ClassVar

import pytest

from ranktune.search.errors import RanktuneError
from ranktune.search.schedule import Budget
from ranktune.search.sites import AdapterSite
from ranktune.search.space import HierarchicalSpace
from ranktune.search.strategies import (
    PROPOSERS,
    Proposal,
    Proposer,
    SearchContext,
    TrialRecord,
    get_proposer,
    propose_next,
    register,
    strategy_names,
)

SITES = tuple(
    AdapterSite(f"model.layers.{layer}.self_attn.{kind}_proj", "language", layer, kind, 64, 64)
    for layer in range(4)
    for kind in ("q", "v")
)


@pytest.fixture
def context() -> SearchContext:
    space = HierarchicalSpace(SITES, Budget.from_rank(SITES, 8))
    return SearchContext(space=space, seed=5, max_trials=10)


def test_trial_zero_is_the_uniform_baseline_for_every_strategy(context: SearchContext) -> None:
    for name in strategy_names():
        proposal = propose_next(get_proposer(name), context, 0, ())
        assert proposal == Proposal(context.space.uniform(), 5, tuple(context.space.uniform_vector()))


def test_random_is_deterministic_and_keeps_the_seed(context: SearchContext) -> None:
    proposer = get_proposer("random")
    first = [propose_next(proposer, context, n, ()) for n in range(1, 5)]
    again = [propose_next(proposer, context, n, ()) for n in range(1, 5)]
    assert first == again and {p.proxy_seed for p in first} == {5}
    assert len({p.schedule for p in first}) > 1
    for proposal in first:
        assert context.space.budget.admits(proposal.schedule.parameter_count)


def test_random_searches_with_neighbouring_seeds_draw_other_vectors(context: SearchContext) -> None:
    other = SearchContext(space=context.space, seed=context.seed + 1, max_trials=10)
    proposer = get_proposer("random")
    mine = {propose_next(proposer, context, n, ()).vector for n in range(1, 10)}
    theirs = {propose_next(proposer, other, n, ()).vector for n in range(1, 10)}
    assert not mine & theirs


def test_uniform_varies_only_the_seed(context: SearchContext) -> None:
    proposals = [propose_next(get_proposer("uniform"), context, n, ()) for n in range(4)]
    assert {p.schedule for p in proposals} == {context.space.uniform()}
    assert [p.proxy_seed for p in proposals] == [5, 6, 7, 8]


def test_unknown_strategy_names_the_field() -> None:
    with pytest.raises(RanktuneError) as caught:
        get_proposer("tpe-not-yet")
    assert caught.value.field == "strategy"


def test_a_new_strategy_plugs_in_and_sees_the_history(context: SearchContext) -> None:
    seen: list[tuple[TrialRecord, ...]] = []

    class BestSoFar(Proposer):
        """Repeats the best finished schedule: a stand-in for a model-based strategy."""

        name: ClassVar[str] = "best-so-far"

        def propose(self, context: SearchContext, number: int, trials: tuple[TrialRecord, ...]) -> Proposal:
            seen.append(trials)
            done = [t for t in trials if t.objective is not None]
            best = max(done, key=lambda t: t.objective or 0.0) if done else trials[0]
            return Proposal(best.schedule, context.seed + number)

    register(BestSoFar)
    try:
        assert "best-so-far" in strategy_names()
        base = context.space.uniform()
        other = context.space.random(1)
        history = (
            TrialRecord(0, "succeeded", base, 5, objective=0.2),
            TrialRecord(1, "succeeded", other, 5, objective=0.7, metrics={"accuracy": 0.7}),
            TrialRecord(2, "running", base, 5),
        )
        proposal = propose_next(get_proposer("best-so-far"), context, 3, history)
        assert proposal.schedule == other and proposal.proxy_seed == 8
        assert seen == [history] and history[2].finished is False
    finally:
        PROPOSERS.pop("best-so-far")
