from __future__ import annotations

import json
import math

import pytest

from ranktune.search.errors import GridError, ScheduleError
from ranktune.search.grid import RankGrid
from ranktune.search.schedule import AlphaRule, Budget, RankSchedule
from ranktune.search.sites import AdapterSite

SITES = (
    AdapterSite("m.layers.0.q_proj", "language", 0, "q", 32, 32),
    AdapterSite("m.layers.0.k_proj", "language", 0, "k", 32, 16),
    AdapterSite("m.layers.0.mlp.down_proj", "language", 0, "down", 64, 32),
)


def test_parameter_count_is_rank_times_in_plus_out() -> None:
    schedule = RankSchedule(SITES, (4, 2, 8))
    assert schedule.parameter_count == 4 * 64 + 2 * 48 + 8 * 96


def test_schedules_are_hashable_comparable_values() -> None:
    a = RankSchedule(SITES, (4, 2, 8))
    b = RankSchedule.from_mapping(
        SITES, {"m.layers.0.q_proj": 4, "m.layers.0.k_proj": 2, "m.layers.0.mlp.down_proj": 8}
    )
    assert a == b and hash(a) == hash(b)
    assert a != RankSchedule(SITES, (4, 2, 4))
    assert len({a, b}) == 1


def test_json_round_trip() -> None:
    schedule = RankSchedule(SITES, (4, 0, 8), AlphaRule("rslora", 16.0))
    text = json.dumps(schedule.to_json())
    assert RankSchedule.from_json(json.loads(text)) == schedule


def test_rank_above_min_in_out_is_refused() -> None:
    with pytest.raises(ScheduleError, match="exceeds min"):
        RankSchedule(SITES, (4, 17, 8))


def test_unknown_site_in_mapping_is_named() -> None:
    with pytest.raises(ScheduleError, match="'nope' is not a site"):
        RankSchedule.from_mapping(SITES, {"nope": 2})


def test_uniform_caps_at_the_largest_grid_rank_that_fits() -> None:
    schedule = RankSchedule.uniform(SITES, 32, RankGrid((0, 8, 12, 32)))
    assert schedule.ranks == (32, 12, 32)


def test_budget_from_rank_is_the_uniform_schedule() -> None:
    budget = Budget.from_rank(SITES, 8)
    assert budget.params == RankSchedule.uniform(SITES, 8).parameter_count == 8 * (64 + 48 + 96)
    assert budget.admits(budget.params) and not budget.admits(budget.params + 1)
    assert budget.floor == math.ceil(0.97 * budget.params)


def test_alpha_rules() -> None:
    assert AlphaRule("ratio", 2.0).scaling_for(8) == 2.0
    assert AlphaRule("rslora", 16.0).scaling_for(16) == 4.0
    with pytest.raises(ScheduleError, match=r"alpha\.kind"):
        AlphaRule("weird", 1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["", "0", "a,b", "-2,4", "4,4"])
def test_invalid_grids_name_the_grid(text: str) -> None:
    with pytest.raises(GridError, match="grid"):
        RankGrid.parse(text)


def test_grid_always_holds_zero_and_is_sorted() -> None:
    assert RankGrid.parse("16, 4,8").values == (0, 4, 8, 16)
