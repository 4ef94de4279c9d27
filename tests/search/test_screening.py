"""Shape screening: the coarse shapes a search asks first, the combination of their winners, and their
place in the proposals (after uniform and the probe's allocations, before the strategy)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ranktune.search import screening
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


def walk(space: HierarchicalSpace, score: object, limit: int = 20) -> list[tuple[str, float]]:
    """Screening run to its end, each shape scored by ``score(ranked site names)`` (uniform: 0.80)."""
    trials = [TrialRecord(0, "succeeded", space.uniform(), 0, 0.80)]
    asked = []
    while (shape := screening.next_shape(space, trials, "maximize")) is not None and len(asked) < limit:
        schedule = space.to_schedule(shape.vector)
        value = score(ranked(schedule))  # type: ignore[operator]
        asked.append((shape.name, value))
        trials.append(TrialRecord(len(trials), "succeeded", schedule, 0, value))
    return asked


def language_attention_pays(names: set[str]) -> float:
    """Fashion-vqa at rank 2 in miniature: the language tower pays, its attention most, vision hurts."""
    language = {n for n in names if n.startswith("language.")}
    attention = {n for n in language if n.rsplit(".", 1)[1] in ATTENTION}
    if any(n.startswith("vision.") for n in names) and not language:
        return 0.60
    return (
        0.80 + 0.05 * (len(language) == len(names)) + 0.03 * (attention == names) - 0.01 * (len(names) < 12)
    )


def test_screening_narrows_one_factor_at_a_time() -> None:
    space = HierarchicalSpace(sites(), Budget.from_rank(sites(), 2))  # rank 2 on the default grid
    asked = walk(space, language_attention_pays)
    assert [name for name, _ in asked] == [
        "tower vision", "tower language",  # towers: language wins (0.85 > 0.80)
        "tower language + attention", "tower language + mlp",  # its kinds: attention wins (0.88)
        "tower language + attention + lower layers", "tower language + attention + upper layers",
    ]  # fmt: skip
    language, attention = screening.stages(space)[0][1], screening.stages(space)[1][0]
    best = space.to_schedule(screening.narrowed(language, attention).vector)
    assert ranked(best) == {s.name for s in space.sites if s.tower == "language" and s.kind in ATTENTION}
    assert space.budget.admits(best.parameter_count)


def test_a_part_that_does_not_beat_the_one_it_narrows_stays_whole() -> None:
    """Nothing beats uniform: every stage asks its levels over the whole model, none narrows."""
    space = context().space
    asked = walk(space, lambda names: 0.70)
    assert [name for name, _ in asked] == [s.name for s in screening.single_shapes(space)]


def test_a_stage_waits_for_its_results() -> None:
    space = context().space
    uniform = TrialRecord(0, "succeeded", space.uniform(), 0, 0.80)
    shapes = screening.single_shapes(space)
    running = [
        TrialRecord(i + 1, "running", space.to_schedule(s.vector), 0) for i, s in enumerate(shapes[:2])
    ]
    assert screening.next_shape(space, [uniform, *running], "maximize") is None, "the towers are running"
    finished = [replace(t, state="succeeded", objective=0.9 - 0.1 * i) for i, t in enumerate(running)]
    following = screening.next_shape(space, [uniform, *finished], "maximize")
    assert following is not None and following.name == "tower vision + attention"
    losses = [replace(t, objective=1.0 - t.objective) for t in finished]  # type: ignore[operator]
    base = replace(uniform, objective=0.2)
    minimized = screening.next_shape(space, [base, *losses], "minimize")
    assert minimized is not None and minimized.name == "tower vision + attention"


def test_screening_comes_after_uniform_and_before_the_strategy() -> None:
    ctx = replace(context(seed=3), screen=True)
    space, proposer = ctx.space, get_proposer("random")
    trials: list[TrialRecord] = []
    for number in range(4):
        proposal = propose_next(proposer, ctx, number, tuple(trials))
        if number in (1, 2):
            shape = screening.single_shapes(space)[number - 1]
            assert proposal.schedule == space.to_schedule(shape.vector) and proposal.vector == shape.vector
            assert proposal.proxy_seed == ctx.seed  # the same data order as uniform's
        state, value = ("running", None) if number else ("succeeded", 0.8)
        trials.append(TrialRecord(number, state, proposal.schedule, proposal.proxy_seed, value,  # type: ignore[arg-type]
                                  vector=proposal.vector))  # fmt: skip
    assert trials[0].schedule == space.uniform()
    shapes = {space.to_schedule(s.vector) for s in screening.single_shapes(space)}
    assert trials[3].schedule not in shapes | {space.uniform()}, "towers running: the strategy's own"
    without = propose_next(proposer, context(seed=3), 1, tuple(trials[:1]))
    assert without.schedule != space.to_schedule(screening.single_shapes(space)[0].vector), "off by default"


@pytest.mark.parametrize("parallel", [1, 3])
def test_a_screened_search_never_repeats_a_shape(parallel: int) -> None:
    from tests.search.synthetic import run_search

    ctx = replace(context(seed=1), screen=True)
    found = run_search(get_proposer("perfmodel"), ctx, trials=14, parallel=parallel)
    towers = {
        ctx.space.to_schedule(s.vector) for s in screening.single_shapes(ctx.space) if s.factor == "tower"
    }
    tried = [t.schedule for t in found]
    assert towers <= set(tried)
    assert all(tried.count(s) == 1 for s in towers)
