"""Shape screening: the coarse shapes a search asks first, the combination of their winners, and their
place in the proposals (after uniform and the probe's allocations, before the strategy)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ranktune.search import screening
from ranktune.search.grid import RankGrid
from ranktune.search.schedule import Budget, RankSchedule
from ranktune.search.space import HierarchicalSpace
from ranktune.search.strategies import TrialRecord, get_proposer, propose_next
from tests.search.synthetic import context, sites

ATTENTION = screening.ATTENTION_KINDS


def ranked(schedule: RankSchedule) -> set[str]:
    """Names of the sites that have an adapter."""
    return {s.name for s, r in zip(schedule.sites, schedule.ranks, strict=True) if r > 0}


def test_each_part_gets_the_whole_budget_and_nothing_else_does() -> None:
    space = context().space
    shapes = screening.single_shapes(space)
    assert [(s.name, s.factor) for s in shapes] == [
        ("tower vision", "tower"), ("tower language", "tower"), ("attention", "kinds"), ("mlp", "kinds"),
        ("lower layers", "layers"), ("upper layers", "layers"),
    ]  # fmt: skip
    picks = {
        "tower vision": lambda s: s.tower == "vision",
        "tower language": lambda s: s.tower == "language",
        "attention": lambda s: s.kind in ATTENTION,
        "mlp": lambda s: s.kind not in ATTENTION,
        # 6 layers in 4 groups: groups 0-1 hold layers 0-2; the projector (no layers) is in both halves
        "lower layers": lambda s: s.layer is None or s.layer < 3,
        "upper layers": lambda s: s.layer is None or s.layer >= 3,
    }
    for shape in shapes:
        schedule = space.to_schedule(shape.vector)
        assert space.budget.admits(schedule.parameter_count), shape.name
        assert ranked(schedule) == {s.name for s in space.sites if picks[shape.name](s)}, shape.name
        assert all(v in (0.0, 1.0) for v in shape.vector)


def test_a_part_too_small_for_the_budget_is_not_screened() -> None:
    """A one-site projector cannot hold the budget of rank 8 everywhere: the projection would blend it
    towards uniform, so it is left out; a model with one tower has no tower shapes at all."""
    space = context().space
    projector = screening._mask(space, lambda t, _g: t == "projector", lambda *_: True)
    assert not screening.holds_the_budget(space, screening.Shape("tower projector", "tower", projector))
    assert "tower projector" not in [s.name for s in screening.single_shapes(space)]
    language = tuple(s for s in sites() if s.tower == "language")
    alone = HierarchicalSpace(language, Budget.from_rank(language, 8))
    assert [s.name for s in screening.single_shapes(alone)] == [
        "attention",
        "mlp",
        "lower layers",
        "upper layers",
    ]


def history(space: HierarchicalSpace, scores: dict[str, float], uniform: float = 0.80) -> list[TrialRecord]:
    shapes = {s.name: s for s in screening.single_shapes(space)}
    trials = [TrialRecord(0, "succeeded", space.uniform(), 0, uniform)]
    for name, score in scores.items():
        trials.append(TrialRecord(len(trials), "succeeded", space.to_schedule(shapes[name].vector), 0, score))
    return trials


def test_the_winners_of_each_factor_are_combined() -> None:
    space = context().space
    shapes = screening.single_shapes(space)
    scores = {"tower vision": 0.60, "tower language": 0.85, "attention": 0.83, "mlp": 0.78,
              "lower layers": 0.79, "upper layers": 0.78}  # fmt: skip
    combined = screening.combined_shape(space, shapes, history(space, scores), "maximize")
    assert combined is not None and combined.name == "tower language + attention"
    schedule = space.to_schedule(combined.vector)
    assert space.budget.admits(schedule.parameter_count)
    assert ranked(schedule) == {s.name for s in space.sites if s.tower == "language" and s.kind in ATTENTION}
    # Minimizing a loss: the lowest values win.
    losses = {name: 2.0 - value for name, value in scores.items()}
    combined = screening.combined_shape(space, shapes, history(space, losses, uniform=1.2), "minimize")
    assert combined is not None and combined.name == "tower language + attention"


def test_a_combination_too_small_for_the_budget_is_a_tilt_towards_it() -> None:
    """At rank 16 everywhere the language attention cannot take the whole budget on grid ranks up to
    32: the projection fills it and spreads the rest, so the combination still leans on it."""
    found = sites()
    space = HierarchicalSpace(found, Budget.from_rank(found, 16), RankGrid((0, 2, 4, 8, 16, 32)))
    shapes = screening.single_shapes(space)
    scores = dict.fromkeys((s.name for s in shapes), 0.5) | {"tower language": 0.85, "attention": 0.83}
    combined = screening.combined_shape(space, shapes, history(space, scores), "maximize")
    assert combined is not None and not screening.holds_the_budget(space, combined)
    schedule = space.to_schedule(combined.vector)
    assert space.budget.admits(schedule.parameter_count)

    def share(s: RankSchedule) -> float:
        cost = [site.params_per_rank * r for site, r in zip(s.sites, s.ranks, strict=True)]
        part = [
            c
            for site, c in zip(s.sites, cost, strict=True)
            if site.tower == "language" and site.kind in ATTENTION
        ]
        return sum(part) / sum(cost)

    assert share(schedule) > share(space.uniform()) + 0.2


def test_no_combination_until_every_shape_finished_or_when_one_factor_wins() -> None:
    space = context().space
    shapes = screening.single_shapes(space)
    scores = {"tower vision": 0.60, "tower language": 0.85, "attention": 0.83, "mlp": 0.78,
              "lower layers": 0.79}  # fmt: skip
    assert screening.combined_shape(space, shapes, history(space, scores), "maximize") is None
    one_winner = {**scores, "attention": 0.70, "upper layers": 0.78}
    assert screening.combined_shape(space, shapes, history(space, one_winner), "maximize") is None


def test_screening_comes_after_uniform_and_before_the_strategy() -> None:
    ctx = replace(context(seed=3), screen=True)
    space, proposer = ctx.space, get_proposer("random")
    shapes = screening.single_shapes(space)
    scores = iter([0.60, 0.85, 0.83, 0.78, 0.79, 0.78])
    trials: list[TrialRecord] = []
    for number in range(len(shapes) + 3):
        proposal = propose_next(proposer, ctx, number, tuple(trials))
        if 1 <= number <= len(shapes):
            shape = shapes[number - 1]
            assert proposal.schedule == space.to_schedule(shape.vector) and proposal.vector == shape.vector
            assert proposal.proxy_seed == ctx.seed  # the same data order as uniform's
        score = 0.80 if number == 0 else next(scores, 0.7)
        trials.append(TrialRecord(number, "succeeded", proposal.schedule, proposal.proxy_seed, score,
                                  vector=proposal.vector))  # fmt: skip
    assert trials[0].schedule == space.uniform()
    combined = trials[len(shapes) + 1].schedule
    assert ranked(combined) == {s.name for s in space.sites if s.tower == "language" and s.kind in ATTENTION}
    later = trials[len(shapes) + 2].schedule
    assert later not in {t.schedule for t in trials[: len(shapes) + 2]}, "then the strategy's own"
    without = propose_next(proposer, context(seed=3), 1, tuple(trials[:1]))
    assert without.schedule != space.to_schedule(shapes[0].vector), "off unless the search asks for it"


@pytest.mark.parametrize("parallel", [1, 3])
def test_a_screened_search_never_repeats_a_shape(parallel: int) -> None:
    from tests.search.synthetic import run_search

    ctx = replace(context(seed=1), screen=True)
    found = run_search(get_proposer("perfmodel"), ctx, trials=14, parallel=parallel)
    shapes = {ctx.space.to_schedule(s.vector) for s in screening.single_shapes(ctx.space)}
    tried = [t.schedule for t in found]
    assert shapes <= set(tried)
    assert all(tried.count(s) == 1 for s in shapes)
