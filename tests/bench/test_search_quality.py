"""Smoke test of bench/search_quality.py: its main loop in process on a tiny configuration."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from bench import search_quality as bench
from bench import search_quality_common as common
from bench import search_quality_report as report

pytestmark = pytest.mark.slow

# One strategy besides the uniform baseline, 2 proxy trials of 4 steps, confirmation and AdaLoRA of 4
# steps with 1 seed: five fine-tunes, each dominated by one evaluation (the first builds the data).
TINY = bench.Config(tasks=("tiny-vlm",), strategies=("random",), trials=2, seeds=1, steps=4, confirm_steps=4,
                    confirm_seeds=1, top_k=1, rank_schedules=1, adalora=True, eva=True)  # fmt: skip


def fraction(value: float) -> bool:
    return math.isfinite(value) and 0.0 <= value <= 1.0


def test_the_main_loop_reports_sane_figures(tmp_path: Path, one_torch_thread: None) -> None:
    store = tmp_path / "runs.jsonl"
    results = bench.run(TINY, progress=False, store=store, jobs=2)  # searches and confirmation: 2 processes
    assert results["config"]["trials"] == 2 and results["wall_s"] > 0
    task = results["tasks"]["tiny-vlm"]
    assert (task["model"], task["task"], task["sites"]) == ("builtin:tiny-vlm", "builtin:digits-vqa", 54)
    assert task["budget_params"] == 121_600  # uniform rank 8 on the 54 sites
    assert list(task["strategies"]) == ["random"]
    random = task["strategies"]["random"]
    (trials,) = random["trials"].values()
    assert [t["number"] for t in trials] == [0, 1]
    assert [t["seed"] for t in trials] == [0, 0]  # random trains every schedule with the search's seed
    assert trials[0]["ranks"] == (8,) * 54  # trial 0 is the uniform baseline
    assert all(fraction(t["objective"]) for t in trials)
    assert random["proxy_best"]["mean"] == max(t["objective"] for t in trials)
    assert random["confirmed"]["n"] == 1 and fraction(random["confirmed"]["mean"])
    baseline = task["uniform_confirmed"]
    assert baseline["n"] == 1 and fraction(baseline["mean"])
    assert random["gain_points"] == pytest.approx(100 * (random["confirmed"]["mean"] - baseline["mean"]))
    assert random["service_result"]["mean"] >= baseline["mean"]  # the service keeps the better of the two
    # One search seed and one confirm seed: paired over the 800 test questions only.
    assert random["paired"]["method"] == "examples (one seed)" and random["paired"]["examples"] == 800
    assert random["paired"]["gain"] == pytest.approx(random["gain_points"] / 100)
    compute = random["compute"]  # 2 proxies of 4 steps and 2 confirmation runs of 4 steps
    assert compute["full_runs"] == pytest.approx(
        (compute["proxy_s"] + compute["confirm_s"]) / compute["full_run_s"]
    )
    assert task["perfmodel_reach"] is None  # needs tpe and perfmodel
    assert task["uniform_proxy_over_seeds"] is None  # needs the uniform strategy
    assert task["model_pool"] == len({tuple(t["ranks"]) for t in trials}) and task["model_curve"] == []
    pairs = task["proxy_vs_full"]
    # Both proxy schedules are confirmed (top-1 of the proxy trials besides trial 0, and uniform): no
    # schedule is left for extra full-length runs, and two points give no rank correlation.
    assert (pairs["schedules"], pairs["extra_schedules"], pairs["spearman"]) == (2, 0, None)
    adalora = task["adalora"]
    assert adalora["confirmed"]["n"] == 1 and fraction(adalora["confirmed"]["mean"])
    assert 0 < adalora["final_rank_sum"] <= common.ADALORA_INIT_R * 54
    sites = common.make_space(*common.TASKS["tiny-vlm"]).sites
    assert set(adalora["final_ranks"]) == {site.name for site in sites}  # AdaLoRA on every site
    eva = task["eva"]
    assert eva["confirmed"]["n"] == 1 and fraction(eva["confirmed"]["mean"])
    # EVA redistributes the budget's ranks (8 x 54 sites) with at most rho x 8 on a site.
    assert set(eva["final_ranks"]) <= {site.name for site in sites} and eva["final_rank_sum"] == 8 * 54
    assert max(eva["final_ranks"].values()) <= common.EVA_RHO * 8 and eva["final_params"] > 0
    assert task["runs"] == 6  # 2 proxy trials, uniform and trial 1 confirmed, AdaLoRA, EVA
    lines = store.read_text().splitlines()
    assert len(lines) == 6, "each fine-tune is stored once"
    confirmations = [
        json.loads(line) for line in lines if json.loads(json.loads(line)["key"])["split"] == "test"
    ]
    assert all(r["extra"]["outcomes"].startswith("800:") for r in confirmations)  # paired statistics
    assert all(len(json.loads(r["key"])["base"]) == 64 for r in confirmations)  # the base weights' sha256

    # A rerun with the same store, in process this time, trains nothing and gives the same figures.
    again = bench.run(TINY, progress=False, store=store, jobs=1)
    assert store.read_text().splitlines() == lines
    assert again["tasks"] == results["tasks"]

    text = report.render_quality({**results, "command": "cmd", "date": "today"})
    assert "### tiny-vlm" in text and "| random |" in text and "PEFT AdaLoRA" in text and "PEFT EVA" in text
    assert "| uniform rank 8 (not searched) | - |" in text  # the baseline row stands in for the strategy
    assert "paired gain [95% CI] (points)" in text and "compute per search (full-run equivalents)" in text
    assert "no seed-noise figure (strategy `uniform` not run)" in text
    assert "**Differs from the issue's protocol**: tasks tiny-vlm (issue: tiny-vlm,minilm)" in text
    results_md = tmp_path / "RESULTS.md"
    heading = report.quality_heading(results)
    assert heading == "Search quality (tiny-vlm)"
    results_md.write_text("# Results\n\n## Search quality (tiny-vlm)\n\nold\n\n## Other\n\nkept\n")
    report.write_section(heading, text, results_md)
    written = results_md.read_text()
    assert "old" not in written and "### tiny-vlm" in written and written.endswith("## Other\n\nkept\n")


def test_presets_and_flags() -> None:
    quick = argparse.Namespace(quick=True, tasks="minilm", strategies=None, trials=5, no_adalora=True,
                               no_eva=True)  # fmt: skip
    config = bench.config_from(quick)
    assert config.tasks == ("minilm",) and config.trials == 5 and config.seeds == bench.QUICK.seeds
    assert config.strategies == bench.STRATEGIES and not config.adalora and not config.eva
    assert bench.config_from(argparse.Namespace(quick=False, no_adalora=False, no_eva=False)) == bench.FULL
    assert report.protocol_differences(bench.FULL) == []
    with pytest.raises(SystemExit, match="--tasks"):
        bench.config_from(argparse.Namespace(quick=False, tasks="nope", no_adalora=False, no_eva=False))
