"""bench/allocation_shapes.py: shapes at the exact budget, paired with uniform, resumable from its store."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import allocation_shapes as shapes
from bench.search_quality_common import TASKS, make_space
from bench.search_quality_runs import RunStore


def test_every_shape_holds_the_budget_on_its_own_part() -> None:
    space = make_space(*TASKS["fashion"], 2)
    for name, picks in shapes.SHAPES.items():
        schedule = shapes.shape_schedule(space, picks)
        assert space.budget.admits(schedule.parameter_count), name
        on = shapes.on_shape(schedule.sites, picks) if picks else [True] * len(schedule.sites)
        off = [r for o, r in zip(on, schedule.ranks, strict=True) if not o]
        assert shapes.only_on_its_part(schedule, picks) == (not any(off)), name
    pure = [
        n for n, p in shapes.SHAPES.items() if shapes.only_on_its_part(shapes.shape_schedule(space, p), p)
    ]
    # The language MLP (5,760 params per rank) cannot land within 97-100% of 30,400 on grid ranks 4 and 8.
    assert [n for n in shapes.SHAPES if n not in pure] == ["language-mlp"]
    assert shapes.shape_schedule(space, None) == space.uniform()


def test_layer_halves_split_each_towers_own_depth() -> None:
    # MiniLM has 6 layers: the halves are 0-2 and 3-5 (not the tiny VLM's 0-1 and 2-3).
    space = make_space(*TASKS["tweets"], 2)
    for name, layers in (("upper-layers", {3, 4, 5}), ("lower-layers", {0, 1, 2})):
        schedule = shapes.shape_schedule(space, shapes.SHAPES[name])
        assert {s.layer for s, r in zip(schedule.sites, schedule.ranks, strict=True) if r} == layers, name
        assert space.budget.admits(schedule.parameter_count), name


def test_shapes_are_trained_paired_and_a_rerun_trains_nothing(
    tmp_path: Path, one_torch_thread: None, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "shapes.jsonl"
    argv = ["--task", "fashion", "--budget-rank", "2", "--shapes", "language-attention", "--seeds", "0,1",
            "--steps", "3", "--split", "val", "--store", str(store)]  # fmt: skip
    shapes.main(argv)
    lines = store.read_text().splitlines()
    assert len(lines) == 4  # uniform and the shape, 2 seeds each
    results = shapes.measure("fashion", 2, ["language-attention"], [0, 1], 3, "val", 1e-3, RunStore(store),
                             jobs=1, progress=False)  # fmt: skip
    assert store.read_text().splitlines() == lines, "the rerun trained nothing"
    uniform, shape = results["rows"]
    assert uniform["shape"] == "uniform" and uniform["gain"] is None and len(uniform["metrics"]) == 2
    assert shape["gain"]["seeds"] == 2 and shape["gain"]["method"] == "seeds x examples"
    assert shape["gain"]["gain"] == pytest.approx(
        sum(shape["metrics"]) / 2 - sum(uniform["metrics"]) / 2, abs=1e-6
    )
    assert results["budget_params"] == 30_400 and shape["params"] <= 30_400
    text = capsys.readouterr().out
    assert "| language-attention |" in text and "paired gain over uniform" in text
    with pytest.raises(SystemExit, match="--shapes: unknown nope"):
        shapes.main([*argv[:4], "--shapes", "nope"])


def test_a_runs_key_does_not_depend_on_the_callers_torch_threads() -> None:
    # Runs train on one thread (train_job); a caller with more threads must still find them in the store.
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = shapes.shape_key("fashion", (2,) * 54, 0, 10, "test", 1e-3)
        torch.set_num_threads(1)
        assert shapes.shape_key("fashion", (2,) * 54, 0, 10, "test", 1e-3) == two
    finally:
        torch.set_num_threads(before)


def test_a_budget_rank_off_the_grid_joins_it() -> None:
    from bench.search_quality_common import GRID, grid_for

    assert grid_for(2) == GRID  # on the grid: the stored protocols' spaces are unchanged
    space = make_space(*TASKS["fashion"], 1)
    assert set(space.uniform().ranks) == {1} and space.budget.admits(space.uniform().parameter_count)
    schedule = shapes.shape_schedule(space, shapes.SHAPES["language-attention"])
    assert space.budget.admits(schedule.parameter_count) and shapes.only_on_its_part(
        schedule, shapes.SHAPES["language-attention"]
    )
