"""Property tests: every search vector maps to a schedule inside the budget band, deterministically."""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ranktune.search.errors import BudgetError
from ranktune.search.schedule import BUDGET_FLOOR, Budget, RankSchedule
from ranktune.search.space import HierarchicalSpace
from tests.search.strategies import grids, site_lists, vectors

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_valid(space: HierarchicalSpace, schedule: RankSchedule) -> None:
    budget = space.budget
    assert schedule.parameter_count <= budget.params, "over budget"
    assert schedule.parameter_count >= BUDGET_FLOOR * budget.params, "under the 97% floor"
    for site, rank in zip(schedule.sites, schedule.ranks, strict=True):
        assert rank in space.grid.values
        assert rank <= site.max_rank


@PROPERTY_SETTINGS
@given(data=st.data(), sites=site_lists(), grid=grids(), groups=st.integers(1, 6))
def test_rank_budget_vectors_land_in_band(data: st.DataObject, sites, grid, groups) -> None:
    rank = data.draw(st.sampled_from([v for v in grid.values if v > 0]))
    try:
        budget = Budget.from_rank(sites, rank, grid)
    except BudgetError:
        assume(False)  # every site is narrower than the smallest rank: nothing to budget
    space = HierarchicalSpace(sites, budget, grid, layer_groups=groups)
    vector = data.draw(vectors(len(space.dimensions)))
    schedule = space.to_schedule(vector)
    assert_valid(space, schedule)
    assert space.to_schedule(list(vector)) == schedule, "not deterministic"


@PROPERTY_SETTINGS
@given(data=st.data(), sites=site_lists(), grid=grids(), share=st.floats(0.05, 1.5))
def test_absolute_budgets_never_exceed(data: st.DataObject, sites, grid, share: float) -> None:
    full = sum(grid.largest_at_most(s.max_rank) * s.params_per_rank for s in sites)
    assume(full > 0)
    budget = Budget(max(1, int(share * full)))
    try:
        space = HierarchicalSpace(sites, budget, grid)
    except BudgetError as e:
        # Refusing is allowed only with a message naming the budget; never an over-budget schedule.
        assert "budget" in str(e)
        return
    schedule = space.to_schedule(data.draw(vectors(len(space.dimensions))))
    assert_valid(space, schedule)


@settings(max_examples=200, deadline=None)
@given(sites=site_lists(), grid=grids(), data=st.data())
def test_uniform_schedule_is_reachable(sites, grid, data: st.DataObject) -> None:
    rank = data.draw(st.sampled_from([v for v in grid.values if v > 0]))
    try:
        budget = Budget.from_rank(sites, rank, grid)
    except BudgetError:
        assume(False)
    space = HierarchicalSpace(sites, budget, grid)
    uniform = RankSchedule.uniform(sites, rank, grid)
    level = data.draw(st.floats(0.01, 1.0))
    assert space.to_schedule([level] * len(space.dimensions)) == uniform
    assert space.uniform() == uniform
    assert uniform.parameter_count == budget.params
