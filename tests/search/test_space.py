from __future__ import annotations

import statistics
import time

import numpy as np
import pytest

from ranktune.search.errors import BudgetError, ScheduleError
from ranktune.search.grid import RankGrid
from ranktune.search.schedule import Budget
from ranktune.search.sites import AdapterSite
from ranktune.search.space import HierarchicalSpace

LLAMA_KINDS = [("q", 1024, 1024), ("k", 1024, 256), ("v", 1024, 256), ("o", 1024, 1024),
               ("gate", 1024, 2816), ("up", 1024, 2816), ("down", 2816, 1024)]  # fmt: skip


def llama_sites(layers: int) -> list[AdapterSite]:
    return [
        AdapterSite(f"model.layers.{i}.{kind}", "language", i, kind, fan_in, fan_out)
        for i in range(layers)
        for kind, fan_in, fan_out in LLAMA_KINDS
    ]


def vlm_sites() -> list[AdapterSite]:
    vision = [AdapterSite(f"v.{i}.{k}", "vision", i, k, 64, 64) for i in range(4) for k in ("q", "v")]
    projector = [AdapterSite("proj.fc1", "projector", None, "fc1", 64, 128)]
    return vision + projector + llama_sites(4)


def test_dimensions_are_coarse_groups_then_fine_kinds() -> None:
    space = HierarchicalSpace(vlm_sites(), Budget.from_rank(vlm_sites(), 8), layer_groups=2)
    names = [d.name for d in space.dimensions]
    assert names[:5] == ["coarse.vision.g0", "coarse.vision.g1", "coarse.projector.g0",
                         "coarse.language.g0", "coarse.language.g1"]  # fmt: skip
    assert "fine.language.gate" in names and "fine.vision.q" in names
    assert len(names) == 5 + 2 + 1 + 7


def test_zero_coarse_weight_switches_a_tower_off() -> None:
    sites = vlm_sites()
    space = HierarchicalSpace(sites, Budget.from_rank(sites, 8))
    vector = [1.0] * len(space.dimensions)
    for i, dim in enumerate(space.dimensions):
        if dim.name.startswith("coarse.vision"):
            vector[i] = 0.0
    schedule = space.to_schedule(vector)
    assert all(r == 0 for s, r in zip(schedule.sites, schedule.ranks, strict=True) if s.tower == "vision")
    assert space.budget.admits(schedule.parameter_count)


def test_deeper_layers_get_more_rank_when_their_group_weighs_more() -> None:
    sites = llama_sites(8)
    space = HierarchicalSpace(sites, Budget.from_rank(sites, 8), layer_groups=2)
    vector = [0.2, 1.0] + [1.0] * 7
    ranks = space.to_schedule(vector).as_dict()
    assert ranks["model.layers.7.q"] > ranks["model.layers.0.q"]


def test_random_is_seeded() -> None:
    sites = vlm_sites()
    space = HierarchicalSpace(sites, Budget.from_rank(sites, 8))
    assert space.random(3) == space.random(3)
    assert len({space.random(seed) for seed in range(6)}) > 1


def test_bad_vectors_are_rejected_with_the_field() -> None:
    space = HierarchicalSpace(vlm_sites(), Budget.from_rank(vlm_sites(), 8))
    with pytest.raises(ScheduleError, match="vector: expected"):
        space.to_schedule([0.5])
    with pytest.raises(ScheduleError, match=r"\[0, 1\]"):
        space.to_schedule([float("nan")] * len(space.dimensions))


def test_budget_too_small_for_any_adapter() -> None:
    with pytest.raises(BudgetError, match="too small for any adapter"):
        HierarchicalSpace(llama_sites(1), Budget(100), RankGrid((0, 2, 4)))


def test_infeasible_band_is_refused() -> None:
    sites = [AdapterSite(name, "language", 0, "q", 64, 64) for name in ("a", "b")]
    # Ranks {0, 32} on two sites cost 0, 4096 or 8192 params: nothing lands within 97-100% of 6000.
    with pytest.raises(BudgetError, match="97-100%"):
        HierarchicalSpace(sites, Budget(6000), RankGrid((0, 32)))


def test_rank_budget_must_be_on_the_grid() -> None:
    with pytest.raises(BudgetError, match="not in the grid"):
        Budget.from_rank(llama_sites(1), 10, RankGrid((0, 8, 16)))


def test_projection_takes_under_5ms_for_500_sites() -> None:
    sites = llama_sites(72)  # 504 sites
    space = HierarchicalSpace(sites, Budget.from_rank(sites, 8))
    rng = np.random.default_rng(0)
    vectors = [space.random_vector(rng) for _ in range(60)]
    timings = []
    for vector in vectors:
        start = time.perf_counter()
        space.to_schedule(vector)
        timings.append(time.perf_counter() - start)
    assert statistics.median(timings) < 0.005
