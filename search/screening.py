"""Shape screening: a search's first questions are coarse. Which tower, which kinds, which layers?

Measured on the tiny VLM at a tight budget (bench/allocation_shapes.py), *where* the ranks go moves
accuracy by far more than how they are spread within a part: every rank on the vision tower loses
13 points on fashion-vqa, every rank on the language tower's attention gains about 2. A random or
model-guided search samples mixtures and rarely tries such extremes. Screening proposes them first,
narrowing one factor at a time (a coordinate search over parts):

1. the towers (when the search has several): the whole budget on each in turn;
2. the kinds within the best part so far: attention (q, k, v, o), then MLP;
3. the layers within the best part so far: the lower, then the upper half.

A stage's shapes train at rung 0 beside uniform's rung-0 run; once they all finished, the best one
becomes the part the next stage narrows if it beat the part it narrowed (uniform at first), else that
part stays. On fashion-vqa at rank 2 that walks: the language tower (+1 point at 200 steps), then its
attention, then a half of its layers. A shape whose part cannot hold the whole budget within the
budget band on the grid is not asked (the projection would blend it towards uniform).

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
    """Every level of every factor over the whole model, in order; parts that cannot hold the budget
    or cannot differ from uniform are left out."""
    return _distinct(space, _levels(space))


def _levels(space: HierarchicalSpace) -> list[Shape]:
    """Each factor's levels as masks over the whole model: the towers (when there are several), the
    attention and MLP kinds, the lower and upper halves of the layers."""
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
    return shapes


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


def stages(space: HierarchicalSpace) -> list[list[Shape]]:
    """The factors in the order screening narrows them (tower, kinds, layers), each as its levels."""
    by_factor: dict[str, list[Shape]] = {}
    for shape in _levels(space):
        by_factor.setdefault(shape.factor, []).append(shape)
    return list(by_factor.values())


def narrowed(current: Shape | None, level: Shape) -> Shape:
    """``level`` within ``current`` (None: the whole model): both parts' sites only."""
    if current is None:
        return level
    vector = tuple(min(a, b) for a, b in zip(current.vector, level.vector, strict=True))
    return Shape(f"{current.name} + {level.name}", level.factor, vector)


def _rung0_scores(trials: Sequence[TrialRecord], direction: Direction) -> dict[tuple[int, ...], float]:
    """Each schedule's objective at rung 0 (oriented: higher is better), by its ranks."""
    sign = 1.0 if direction == "maximize" else -1.0
    return {t.schedule.ranks: sign * float(t.objective) for t in trials
            if t.rung == 0 and t.state == "succeeded" and t.objective is not None}  # fmt: skip


def next_shape(space: HierarchicalSpace, trials: Sequence[TrialRecord], direction: Direction) -> Shape | None:
    """The next shape to try, walking the factors in order: each stage tries its levels within the best
    part so far (the whole model at first); once they all finished at rung 0, the best goes on if it beat
    the part it narrowed (uniform at first). None while a stage's shapes are still running (the strategy
    proposes meanwhile) and once every stage is done."""
    scores = _rung0_scores(trials, direction)
    tried = {t.schedule.ranks for t in trials}
    best: Shape | None = None
    best_score = scores.get(space.uniform().ranks)
    for stage in stages(space):
        current = space.uniform().ranks if best is None else space.to_schedule(best.vector).ranks
        narrower = (narrowed(best, level) for level in stage)
        candidates = [c for c in narrower if holds_the_budget(space, c)]
        candidates = [c for c in candidates if space.to_schedule(c.vector).ranks != current]
        ranks = [space.to_schedule(c.vector).ranks for c in candidates]
        for candidate, r in zip(candidates, ranks, strict=True):
            if r not in tried:
                return candidate
        if best_score is None or any(r not in scores for r in ranks):
            return None  # this stage's results (or uniform's) are not in yet
        for candidate, r in zip(candidates, ranks, strict=True):
            if scores[r] > best_score:
                best, best_score = candidate, scores[r]
    return None


def screening_proposal(
    context: SearchContext, trials: Sequence[TrialRecord]
) -> tuple[RankSchedule, tuple[float, ...]] | None:
    """The next shape to try as (schedule, vector), or None (see ``next_shape``)."""
    shape = next_shape(context.space, trials, context.direction)
    return None if shape is None else (context.space.to_schedule(shape.vector), shape.vector)
