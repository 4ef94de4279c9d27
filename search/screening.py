"""Shape screening: a search's first questions are coarse. Which tower, which kinds, which layers?

Measured on the tiny VLM at a tight budget (bench/allocation_shapes.py), *where* the ranks go moves
accuracy by far more than how they are spread within a part: every rank on the vision tower loses
13 points on fashion-vqa, every rank on the language tower's attention gains about 2. A random or
model-guided search samples mixtures and rarely tries such extremes. Screening proposes them first:

1. one schedule per *part* at the exact budget, every rank on that part: each tower (when the search
   has several), the attention kinds (q, k, v, o), the MLP kinds, the lower and the upper half of the
   layers;
2. once those finished (at rung 0, beside uniform's rung-0 run), the *combination* of the winners:
   of each factor (tower, kind family, layer half) the part that beat uniform by the most, all of
   them at once (e.g. the language tower's attention). A factor with no part above uniform is left
   whole. Where that part cannot hold the whole budget, the projection fills it to the grid's top
   rank and spreads the rest.

Every shape is a 0/1 vector of the hierarchical space (coarse weights per tower and layer group times
fine weights per tower and kind), so it is an ordinary point of the search: TPE and the performance
model learn from it like from any other trial, and the projection keeps it within the budget band.

Pure functions of frozen inputs, like every proposer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ranktune.search.proposer import Direction, SearchContext, TrialRecord
from ranktune.search.schedule import RankSchedule
from ranktune.search.space import HierarchicalSpace

ATTENTION_KINDS = frozenset({"q", "k", "v", "o"})
BASELINE = 0  # trial number (and config) of the uniform baseline


@dataclass(frozen=True)
class Shape:
    """Every rank on one part of the model (``factor`` = its level) as a 0/1 search vector."""

    name: str
    factor: str  # "tower", "kinds" or "layers"; "combined" for the winners together
    vector: tuple[float, ...]


def _mask(space: HierarchicalSpace, coarse: Callable[[str, int], bool], fine: Callable[[str, str], bool]) -> (
    tuple[float, ...]
):  # fmt: skip
    """The vector with 1 where ``coarse(tower, group)`` / ``fine(tower, kind)`` hold, else 0."""
    values = []
    for dimension in space.dimensions:
        level, tower, part = dimension.name.split(".", 2)
        keep = coarse(tower, int(part[1:])) if level == "coarse" else fine(tower, part)
        values.append(1.0 if keep else 0.0)
    return tuple(values)


def _is_tower(tower: str) -> Callable[[str, int], bool]:
    return lambda t, _group: t == tower


def single_shapes(space: HierarchicalSpace) -> list[Shape]:
    """The parts a search screens, in order; parts that cannot differ from uniform are left out."""
    towers: list[str] = list(dict.fromkeys(s.tower for s in space.sites))  # in the model's order
    kinds = {s.kind for s in space.sites}
    placed = list(zip(space.sites, space.group_of, strict=True))
    groups: dict[str, list[int]] = {t: sorted({g for s, g in placed if s.tower == t}) for t in towers}

    def every(*_: object) -> bool:
        return True

    shapes = []
    if len(towers) > 1:
        for tower in towers:
            only = _mask(space, _is_tower(tower), every)
            shapes.append(Shape(f"tower {tower}", "tower", only))
    if kinds & ATTENTION_KINDS and kinds - ATTENTION_KINDS:
        attention = _mask(space, every, lambda _t, k: k in ATTENTION_KINDS)
        shapes.append(Shape("attention", "kinds", attention))
        shapes.append(Shape("mlp", "kinds", _mask(space, every, lambda _t, k: k not in ATTENTION_KINDS)))
    if any(len(g) > 1 for g in groups.values()):

        def half(upper: bool) -> Callable[[str, int], bool]:
            def keep(tower: str, group: int) -> bool:
                levels = groups[tower]
                if len(levels) == 1:  # a tower without layers (a projector) stays in both halves
                    return True
                return (levels.index(group) >= len(levels) // 2) == upper

            return keep

        shapes.append(Shape("lower layers", "layers", _mask(space, half(False), every)))
        shapes.append(Shape("upper layers", "layers", _mask(space, half(True), every)))
    return _distinct(space, shapes)


def holds_the_budget(space: HierarchicalSpace, shape: Shape) -> bool:
    """Whether the shape's own sites take the whole budget: a part too small for it (a projector of two
    sites) is blended towards uniform by the projection, and is not that part any more."""
    weights = space.site_weights(shape.vector)
    schedule = space.to_schedule(shape.vector)
    return all(rank == 0 for rank, weight in zip(schedule.ranks, weights, strict=True) if weight == 0.0)


def _distinct(space: HierarchicalSpace, shapes: Sequence[Shape]) -> list[Shape]:
    """Shapes that hold the budget on their own part, differ from uniform and from one another."""
    seen = {space.uniform().ranks}
    kept = []
    for shape in shapes:
        ranks = space.to_schedule(shape.vector).ranks
        if ranks not in seen and holds_the_budget(space, shape):
            seen.add(ranks)
            kept.append(shape)
    return kept


def _rung0_scores(trials: Sequence[TrialRecord], direction: Direction) -> dict[tuple[int, ...], float]:
    """Each schedule's objective at rung 0 (oriented: higher is better), by its ranks."""
    sign = 1.0 if direction == "maximize" else -1.0
    return {t.schedule.ranks: sign * float(t.objective) for t in trials
            if t.rung == 0 and t.state == "succeeded" and t.objective is not None}  # fmt: skip


def combined_shape(space: HierarchicalSpace, shapes: Sequence[Shape], trials: Sequence[TrialRecord],
                   direction: Direction) -> Shape | None:  # fmt: skip
    """The winners of every factor together, once every single shape and uniform finished at rung 0;
    None before that, or when fewer than two factors have a part that beat uniform."""
    scores = _rung0_scores(trials, direction)
    baseline = scores.get(space.uniform().ranks)
    ranks = {shape.name: space.to_schedule(shape.vector).ranks for shape in shapes}
    if baseline is None or any(r not in scores for r in ranks.values()):
        return None
    winners: dict[str, Shape] = {}
    for shape in shapes:
        score = scores[ranks[shape.name]]
        best = winners.get(shape.factor)
        if score > baseline and (best is None or score > scores[ranks[best.name]]):
            winners[shape.factor] = shape
    if len(winners) < 2:
        return None
    chosen = list(winners.values())
    vector = tuple(min(values) for values in zip(*(s.vector for s in chosen), strict=True))
    # A combination too small to hold the budget is still asked: the projection fills its sites to
    # their caps and spreads the rest (a tilt towards the winners rather than all of it on them).
    return Shape(" + ".join(s.name for s in chosen), "combined", vector)


def screening_proposal(
    context: SearchContext, trials: Sequence[TrialRecord]
) -> tuple[RankSchedule, tuple[float, ...]] | None:
    """The next shape to try (schedule and vector): the first single shape no trial has tried, then the
    combination of the winners once it can be formed; None when screening has nothing (more) to ask."""
    space = context.space
    tried = {t.schedule.ranks for t in trials}
    shapes = single_shapes(space)
    for shape in shapes:
        schedule = space.to_schedule(shape.vector)
        if schedule.ranks not in tried:
            return schedule, shape.vector
    combined = combined_shape(space, shapes, trials, context.direction)
    if combined is not None:
        schedule = space.to_schedule(combined.vector)
        if schedule.ranks not in tried:
            return schedule, combined.vector
    return None
