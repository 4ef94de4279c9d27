"""bench/proxy_fidelity.py: the scoring on known rankings, and its main loop on a tiny real store."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench import proxy_fidelity as fidelity_bench
from bench.proxy_fidelity import Variant, fidelity
from bench.search_quality_bench import TaskBench
from bench.search_quality_common import Config
from bench.search_quality_runs import RunStore
from ranktune.search.schedule import RankSchedule


def test_a_variant_is_parsed_from_its_flag() -> None:
    assert Variant.parse("long:steps=400,lr=0.003,seeds=0+1") == Variant("long", 400, 0.003, (0, 1))
    assert Variant.parse("plain:") == Variant("plain")
    with pytest.raises(SystemExit, match="unknown field 'rank'"):
        Variant.parse("x:rank=4")
    with pytest.raises(SystemExit, match="label"):
        Variant.parse(":steps=4")


def test_a_proxy_that_ranks_as_the_reference_scores_one_and_keeps_the_best() -> None:
    full = np.array([0.60, 0.70, 0.65, 0.55, 0.72, 0.68, 0.50])
    same = fidelity(full * 0.5, full, base=full[::-1].copy())
    assert same["spearman"] == pytest.approx(1.0)
    assert same["interval"][0] == pytest.approx(1.0)  # every resample keeps the order
    assert same["proxy_best_full"] == full.max()
    assert same["top_full"] == pytest.approx(np.sort(full)[-fidelity_bench.TOP :].mean())
    reversed_ = fidelity(-full, full, base=full)
    assert reversed_["spearman"] == pytest.approx(-1.0)
    assert reversed_["proxy_best_full"] == full.min()
    assert reversed_["beats_first"] == 0.0  # never better than the perfect base


@pytest.mark.slow
def test_variants_are_scored_on_stored_full_length_runs(tmp_path: Path, one_torch_thread: None) -> None:
    path = tmp_path / "runs.jsonl"
    bench = TaskBench("tiny-vlm", Config(tasks=("tiny-vlm",)), progress=False, store=RunStore(path))
    no_language = tuple(0 if s.tower == "language" else 16 for s in bench.space.sites)
    ranks = [bench.space.uniform().ranks, (4,) * 54, no_language]
    for r in ranks:  # the reference: real 4-step "full-length" runs on test
        bench.runner.metric(RankSchedule(bench.space.sites, r, bench.space.alpha), 1000, 4, "test")
    before = path.read_text().count("\n")

    results = fidelity_bench.run("tiny-vlm", [Variant("two seeds", steps=2, seeds=(0, 1))], path,
                                 full_steps=4, progress=False)  # fmt: skip
    assert results["schedules"] == 3 and results["full_seeds"] == 1
    (row,) = results["variants"]
    assert len(row["proxy"]) == 3 and all(0.0 <= p <= 1.0 for p in row["proxy"]) and row["seconds"] > 0
    # 2 steps are too few to answer anything: a constant proxy ranks nothing (NaN, shown as n/a)
    assert all(math.isnan(row[k]) or -1.0 <= row[k] <= 1.0 for k in ("spearman", "seed_spearman"))
    assert list(results["towers"]) == list(row["towers"]) == ["vision", "projector", "language"]
    assert fidelity_bench.tower_shares(bench, ranks)["language"][2] == 0.0
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    keys = [json.loads(line["key"]) for line in lines[before:]]
    assert len(keys) == 6  # 3 schedules x 2 proxy seeds, trained on val and kept in the store
    assert {(k["steps"], k["split"]) for k in keys} == {(2, "val")}
    trained = sorted((tuple(k["ranks"]), k["seed"]) for k in keys)
    assert trained == sorted((r, s) for r in ranks for s in (0, 1))

    again = fidelity_bench.run("tiny-vlm", [Variant("two seeds", steps=2, seeds=(0, 1))], path,
                               full_steps=4, progress=False)  # fmt: skip
    assert path.read_text().count("\n") == before + 6  # replayed from the store, nothing trained
    assert again["variants"][0]["proxy"] == row["proxy"]
    text = fidelity_bench.render({**results, "command": "cmd", "date": "d", "machine": "m", "threads": 1,
                                  "jobs": 1})  # fmt: skip
    assert "| two seeds |" in text and "3 LoRA schedules" in text and "| 1.00x |" in text
    assert "| score | vision share | projector share | language share |" in text
    nan = {"language": math.nan}  # a one-tower model (MiniLM): no share varies, so no table
    one_tower = {**results, "towers": nan, "variants": [{**v, "towers": nan} for v in results["variants"]]}
    text = fidelity_bench.render({**one_tower, "command": "cmd", "date": "d", "machine": "m", "threads": 1,
                                  "jobs": 1})  # fmt: skip
    assert "| two seeds |" in text and "What each one rewards" not in text


@pytest.mark.slow
def test_full_length_seeds_are_paired_across_schedules(tmp_path: Path, one_torch_thread: None) -> None:
    path = tmp_path / "runs.jsonl"
    bench = TaskBench("tiny-vlm", Config(tasks=("tiny-vlm",)), progress=False, store=RunStore(path))
    uniform = bench.space.uniform().ranks
    held = {(4,) * 54: (1000, 1001), (2,) * 54: (1001,), (1,) * 54: (1000,), uniform: (1000,)}
    for r, seeds in held.items():  # as searches confirm: each its own seed, one schedule on both
        for seed in seeds:
            bench.runner.metric(RankSchedule(bench.space.sites, r, bench.space.alpha), seed, 4, "test")
    before = path.read_text().count("\n")

    results = fidelity_bench.run("tiny-vlm", [Variant("one", steps=2)], path, full_steps=4, progress=False,
                                 limit=3, full_seeds=(1000, 1001))  # fmt: skip
    keys = [json.loads(json.loads(line)["key"]) for line in path.read_text().splitlines()[before:]]
    full = sorted((k["ranks"][0], k["seed"]) for k in keys if k["split"] == "test")
    # the schedule holding both seeds first, then the others in ranks order; each given the seed it lacked
    assert full == [(1, 1001), (2, 1000)]
    assert results["schedules"] == 3 and results["full_seeds"] == 2
    assert results["full_seed_list"] == [1000, 1001] and results["full_repeated"] == 3
    text = fidelity_bench.render({**results, "command": "cmd", "date": "d", "machine": "m", "threads": 1,
                                  "jobs": 1})  # fmt: skip
    assert "every schedule on seeds 1000, 1001" in text
