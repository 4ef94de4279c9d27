"""Smoke test of bench/search_quality.py: its main loop in process on a tiny configuration."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench import search_quality as bench
from bench import search_quality_common as common
from bench import search_quality_report as report
from bench.search_quality_bench import make_context, proxy_best, run_search
from ranktune.search.schedule import RankSchedule

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
    assert 0 < adalora["final_rank_sum"] <= common.adalora_init_r(8) * 54
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


def test_a_tighter_budget_runs_every_row_at_its_rank(tmp_path: Path, one_torch_thread: None) -> None:
    """``--budget-rank 2``: the space, uniform baseline, AdaLoRA (3→2) and EVA (r 2) all at rank 2."""
    config = replace(TINY, budget_rank=2)
    results = bench.run(config, progress=False, store=tmp_path / "runs.jsonl", jobs=1)
    task = results["tasks"]["tiny-vlm"]
    assert task["budget_params"] == 121_600 // 4  # uniform rank 2 on the 54 sites
    (trials,) = task["strategies"]["random"]["trials"].values()
    assert trials[0]["ranks"] == (2,) * 54
    sites = common.make_space(*common.TASKS["tiny-vlm"], 2).sites
    assert sum(r * s.params_per_rank for r, s in zip(trials[1]["ranks"], sites, strict=True)) <= 30_400
    assert 0 < task["adalora"]["final_rank_sum"] <= 3 * 54
    assert task["eva"]["final_rank_sum"] == 2 * 54 and max(task["eva"]["final_ranks"].values()) <= 4
    assert report.quality_heading(results) == "Search quality (tiny-vlm, budget rank 2)"
    text = report.render_quality({**results, "command": "cmd", "date": "today"})
    assert "| uniform rank 2 (not searched) |" in text and "PEFT AdaLoRA 3→2" in text
    assert "budget-rank 2 (issue: 8)" in text


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


# ASHA beside random, compute-matched: 4 trials of 12 steps (48 proxy steps) against rungs of 4, 8 and 16
# steps (eta 2). A plain search's runs are not of any rung's length, so the figures that need one proxy
# length (performance model, proxy vs full) show random's trials only. About 17 fine-tunes of <= 16 steps.
ASHA_FLAGS = ["--tasks", "tiny-vlm", "--strategies", "random,random+asha", "--fidelity", "4:16:2",
              "--trials", "4", "--seeds", "1", "--steps", "12", "--confirm-steps", "4",
              "--confirm-seeds", "1", "--top-k", "1", "--rank-schedules", "1", "--no-adalora",
              "--no-eva"]  # fmt: skip


def test_an_asha_search_runs_compute_matched_beside_random(
    tmp_path: Path, one_torch_thread: None, capsys: pytest.CaptureFixture[str]
) -> None:
    store, out = tmp_path / "runs.jsonl", tmp_path / "results.json"
    bench.main([*ASHA_FLAGS, "--store", str(store), "--json", str(out)])
    results = json.loads(out.read_text())
    assert results["config"]["fidelity"] == [4, 16, 2]
    task = results["tasks"]["tiny-vlm"]
    assert list(task["strategies"]) == ["random", "random+asha"]
    plain, asha = task["strategies"]["random"], task["strategies"]["random+asha"]
    (plain_trials,) = plain["trials"].values()
    (trials,) = asha["trials"].values()
    assert [t["steps"] for t in plain_trials] == [12] * 4 and plain["proxy_steps"] == {"0": 48}
    assert "rungs" not in plain

    # Every trial trains its rung's steps; trial 0 is uniform at the lowest rung, with the search's seed.
    rungs = [4, 8, 16]
    assert asha["rungs"]["steps"] == rungs and asha["rungs"]["eta"] == 2
    assert all(t["steps"] == rungs[t["rung"]] for t in trials)
    assert (trials[0]["ranks"], trials[0]["seed"], trials[0]["rung"]) == (plain_trials[0]["ranks"], 0, 0)
    # A promotion re-trains an earlier schedule with its proxy seed, one rung above its last trial.
    by_number = {t["number"]: t for t in trials}
    promoted = [t for t in trials if t["rung"] > 0]
    assert promoted and all(t["config"] < t["number"] for t in promoted)
    for t in promoted:
        start = by_number[t["config"]]
        assert start["rung"] == 0 and (start["ranks"], start["seed"]) == (t["ranks"], t["seed"])
        assert any(b["config"] == t["config"] and b["rung"] == t["rung"] - 1 for b in trials[: t["number"]])
    assert all(t["config"] == t["number"] for t in trials if t["rung"] == 0)
    # Compute-matched: it stops at the first trial that brings its steps to the plain search's 48.
    spent = [t["steps"] for t in trials]
    assert 48 <= sum(spent) < 48 + rungs[-1] and sum(spent[:-1]) < 48
    assert asha["proxy_steps"] == {"0": sum(spent)}
    counts = [sum(t["rung"] == r for t in trials) for r in range(3)]
    assert asha["rungs"]["counts"] == {"0": counts} and counts[2] >= 1  # 48 steps reach the top rung
    # Proxy best and confirmation come from the highest rung (as search.confirm.plan ranks).
    top = [t for t in trials if t["rung"] == 2]
    assert asha["rungs"]["best_rung"] == {"0": 2}
    assert asha["proxy_best"]["mean"] == max(t["objective"] for t in top)
    uniform, confirmed = asha["confirms"]["0"]
    assert uniform == 0 and by_number[confirmed]["rung"] == 2
    assert by_number[confirmed]["ranks"] != trials[0]["ranks"]  # not the uniform baseline's promotion

    # Each trial is its own fine-tune of its own length in the store, and compute counts it at that length.
    stored = {}
    for line in store.read_text().splitlines():
        record = json.loads(line)
        key = json.loads(record["key"])
        stored[(tuple(key["ranks"]), key["seed"], key["steps"], key["split"])] = record["wall_s"]
    runs = [(tuple(t["ranks"]), t["seed"], t["steps"], "val") for t in trials]
    assert all(run in stored for run in runs)
    assert asha["compute"]["proxy_s"] == pytest.approx(sum(stored[run] for run in runs))
    assert {s for (_, _, s, split) in stored if split == "val"} <= {4, 8, 12, 16}
    # One proxy length only: random's 4 distinct trials of 12 steps; the 4/8/16-step ones are left out.
    assert task["model_pool"] == len({tuple(t["ranks"]) for t in plain_trials}) == 4
    assert task["proxy_vs_full"]["schedules"] <= 4

    text = " ".join(capsys.readouterr().out.split())  # the report main printed, unwrapped
    assert "| random |" in text and "| random+asha |" in text
    assert f"`random+asha` trials per rung, rungs 4/8/16: {'/'.join(map(str, counts))} (seed 0: " in text
    assert "distinct 12-step proxy trials" in text and "`+asha` trials at other lengths left out" in text
    assert "fidelity 4:16:2 (issue: none)" in text
    from ranktune.search.fidelity import Fidelity

    fidelity = Fidelity(4, 16, 2)
    scratch, resumed = (
        fidelity.full_run_equivalents(dict(enumerate(counts)), resume=r) for r in (False, True)
    )
    assert f"would cost {resumed:.1f} instead of {scratch:.1f} top-rung runs per search" in text


def test_resumed_promotions_go_on_from_the_rung_below_and_spend_only_the_added_steps(
    tmp_path: Path, one_torch_thread: None, capsys: pytest.CaptureFixture[str]
) -> None:
    store, out = tmp_path / "runs.jsonl", tmp_path / "results.json"
    flags = [*ASHA_FLAGS, "--strategies", "random+asha", "--resume", "--store", str(store)]
    bench.main([*flags, "--json", str(out)])
    asha = json.loads(out.read_text())["tasks"]["tiny-vlm"]["strategies"]["random+asha"]
    (trials,) = asha["trials"].values()
    rungs = [4, 8, 16]
    promoted = [t for t in trials if t["rung"] > 0]
    assert promoted and all(t["start"] == 0 for t in trials if t["rung"] == 0)
    assert all(t["start"] == rungs[t["rung"] - 1] for t in promoted)  # each found its rung below
    # Compute-matched on trained steps: a promotion spends only what its rung adds.
    trained = [t["steps"] - t["start"] for t in trials]
    assert asha["proxy_steps"] == {"0": sum(trained)} and 48 <= sum(trained) < 48 + rungs[-1]
    keys = [json.loads(json.loads(line)["key"]) for line in store.read_text().splitlines()]
    resumed = {(tuple(k["ranks"]), k["seed"], k["steps"], k["start"]) for k in keys if "start" in k}
    assert resumed == {(tuple(t["ranks"]), t["seed"], t["steps"], t["start"]) for t in promoted}
    states = list((tmp_path / "runs.jsonl.states").glob("*.pt"))
    assert len(states) == sum(t["rung"] < 2 for t in trials)  # every run below the top rung kept one
    text = " ".join(capsys.readouterr().out.split())
    assert "Promotions went on from the rung below's training state (`--resume`)" in text

    # A rerun replays the store; the states are only needed to train a missing promotion.
    for state in states:
        state.unlink()
    lines = store.read_text().count("\n")
    bench.main([*flags, "--json", str(tmp_path / "again.json")])
    assert store.read_text().count("\n") == lines
    again = json.loads((tmp_path / "again.json").read_text())["tasks"]["tiny-vlm"]["strategies"]
    assert again["random+asha"]["trials"] == asha["trials"]
    with pytest.raises(SystemExit, match="--resume: only the promotions of \\+asha"):
        bench.config_from(argparse.Namespace(quick=True, no_adalora=False, no_eva=False, resume=True))


def test_asha_labels_need_a_fidelity(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match=r"random\+asha .*give --fidelity MIN:MAX:ETA"):
        bench.main(["--quick", "--strategies", "random,random+asha"])
    flags = {"quick": True, "no_adalora": False, "no_eva": False}
    with pytest.raises(SystemExit, match="--fidelity: only \\+asha strategies"):
        bench.config_from(argparse.Namespace(**flags, strategies="random", fidelity="4:16:2"))
    with pytest.raises(SystemExit, match="--fidelity: MIN:MAX:ETA"):
        bench.config_from(argparse.Namespace(**flags, strategies="tpe+asha", fidelity="4:16"))
    with pytest.raises(SystemExit, match="max_steps: must be at least min_steps"):
        bench.config_from(argparse.Namespace(**flags, strategies="tpe+asha", fidelity="16:4:2"))
    with pytest.raises(SystemExit, match="--strategies: choose from"):
        bench.config_from(argparse.Namespace(**flags, strategies="uniform+asha", fidelity="4:16:2"))
    config = bench.config_from(argparse.Namespace(**flags, strategies="tpe,tpe+asha", fidelity="67:600:3"))
    assert config.fidelity == (67, 600, 3) and config.strategies == ("tpe", "tpe+asha")


class SyntheticRunner:
    """A stand-in for the bench's ``Runner``: a made-up objective of the ranks and the length, no training."""

    def __init__(self, config: common.Config, sites: int) -> None:
        self.config, self.calls = config, []
        self.weights = np.linspace(-1.0, 1.0, sites)

    def metric(self, schedule: RankSchedule, seed: int, steps: int, split: str, start: int = 0,
               keep_state: bool = False) -> float:  # fmt: skip
        self.calls.append((schedule.ranks, seed, steps, split))
        return float(0.5 + 1e-3 * self.weights @ np.asarray(schedule.ranks) + 0.01 * math.log(steps))


class NoBar:
    def set_postfix(self, **_: object) -> None: ...

    def update(self, _: int) -> None: ...


def test_perfmodel_asha_runs_its_base_proposer_over_rungs() -> None:
    """perfmodel+asha through the bench's search loop on a synthetic objective: the spec's context
    (fidelity, no proxy.steps), its rungs, promotions once the model has taken over, and its budget."""
    config = common.Config(tasks=("tiny-vlm",), strategies=("perfmodel+asha",), trials=12, steps=12,
                           fidelity=(4, 36, 3))  # fmt: skip
    space = common.make_space(*common.TASKS["tiny-vlm"])
    context = make_context(*common.TASKS["tiny-vlm"], "perfmodel+asha", 0, config, space)
    assert context.fidelity is not None and context.fidelity.rungs == (4, 12, 36)
    assert context.max_trials == 36  # 144 steps of 4: a cap the search cannot reach
    runner = SyntheticRunner(config, len(space.sites))
    history = run_search(runner, context, "perfmodel+asha", NoBar())  # type: ignore[arg-type]
    lengths = [(4, 12, 36)[t.rung] for t in history]
    assert [c[2] for c in runner.calls] == [t.steps for t in history] == lengths
    steps = sum(t.steps or 0 for t in history)
    assert 144 <= steps < 144 + 36 and {t.rung for t in history} == {0, 1, 2}
    late = [t for t in history if t.rung > 0 and t.number > 10]  # once the model fits (8 trials)
    assert late and all(history[t.config_number].schedule == t.schedule for t in late)
    assert proxy_best(history).rung == 2
    with pytest.raises(ValueError, match=r"needs Config\.fidelity"):
        make_context(*common.TASKS["tiny-vlm"], "perfmodel+asha", 0, common.Config(), space)


def test_only_trial_0_of_an_asha_search_is_known_before_training() -> None:
    """--jobs: a +asha search is history-dependent even with a history-free proposer (random): its
    promotions follow results, so only its trial 0 (uniform, at the lowest rung) trains ahead."""
    from bench.search_quality_bench import TaskBench

    config = common.Config(tasks=("tiny-vlm",), strategies=("random", "random+asha"), trials=3,
                           fidelity=(67, 600, 3))  # fmt: skip
    tasks = TaskBench("tiny-vlm", config, progress=False)
    uniform = tasks.uniform.ranks
    runs = tasks.known_runs([("random+asha", 0), ("random", 0)])
    assert runs[0] == (uniform, 0, 67) and runs[1] == (uniform, 0, 200)
    assert len(runs) == 4 and all(steps == 200 and ranks != uniform for ranks, _, steps in runs[2:])
    assert tasks.history_free_runs([("random+asha", 0), ("random", 0)]) == [(r, s) for r, s, _ in runs[1:]]


def test_cascade_starts_with_the_probe_and_its_allocation(tmp_path: Path, one_torch_thread: None) -> None:
    """cascade (perfmodel+asha+probe): the probe trains once, over-ranked, at the second rung's length;
    its allocation is the first schedule after uniform; the probe's steps count in the search's budget."""
    from bench.search_quality_bench import TaskBench
    from bench.search_quality_probe import probe_cost
    from bench.search_quality_runs import RunStore
    from ranktune.search import probe

    config = common.Config(tasks=("tiny-vlm",), strategies=("cascade",), trials=4, steps=12,
                           fidelity=(4, 16, 2))  # fmt: skip
    tasks = TaskBench("tiny-vlm", config, progress=False, store=RunStore(tmp_path / "runs.jsonl"))
    history = tasks.run_one_search("cascade", 0)
    seconds, steps = probe_cost(tasks.runner, tasks.space, 0, common.probe_length(config))
    assert steps == 8 and seconds > 0  # the second rung (4, 8, 16)
    probe_runs = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    (record,) = [r for r in probe_runs if json.loads(r["key"])["method"] == "probe"]
    stats = record["extra"]["site_stats"]
    assert set(stats) == {s.name for s in tasks.space.sites} and all(v["rank"] == 16 for v in stats.values())
    allocated = probe.allocate(tasks.space, probe.site_importance(probe.probe_schedule(tasks.space), stats))
    assert history[0].schedule == tasks.uniform and history[1].schedule == allocated
    spent = steps + sum(t.steps or 0 for t in history)
    assert 48 <= spent < 48 + 16 and sum(t.steps or 0 for t in history[:-1]) + steps < 48
    again = tasks.run_one_search("cascade", 0)  # a rerun recalls the probe and every trial
    assert [t.schedule for t in again] == [t.schedule for t in history]
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == len(probe_runs)


def test_each_searchs_model_is_scored_against_the_confirmed_metric() -> None:
    """model_vs_full fits the engine's model on a search's first n trials and ranks the schedules run
    at full length: on a synthetic objective that the proxy and the full run share, it ranks them well."""
    from types import SimpleNamespace

    from bench.search_quality_model import model_vs_full

    config = common.Config(tasks=("tiny-vlm",), strategies=("random",), trials=16, steps=12, confirm_steps=40)
    model, task = common.TASKS["tiny-vlm"]
    space = common.make_space(model, task)
    runner = SyntheticRunner(config, len(space.sites))
    context = make_context(model, task, "random", 0, config, space)
    history = run_search(runner, context, "random", NoBar())  # type: ignore[arg-type]
    others = [space.random(np.random.default_rng(100 + i)) for i in range(8)]
    cache = {
        (s, 1000, 40, "test"): runner.metric(s, 1000, 40, "test")
        for s in [t.schedule for t in history] + others
    }
    histories = {"uniform": {0: history[:1]}, "random": {0: history}}
    bench_like = SimpleNamespace(runner=SimpleNamespace(cache=cache), histories=histories, model=model,
                                 task=task, config=config, space=space)  # fmt: skip
    rows = model_vs_full(bench_like, sizes=(8, 12))  # type: ignore[arg-type]
    assert [(r["strategy"], r["n"]) for r in rows] == [("random", 8), ("random", 12), ("random", 16)]
    assert all(r["schedules"] == len({k[0] for k in cache}) and r["searches"] == 1 for r in rows)
    assert rows[-1]["spearman"] > 0.5  # the objective is linear in the ranks: the trees find it


def test_a_screen_label_screens_the_shapes_first() -> None:
    """``perfmodel+screen`` is perfmodel with the service's ``screen``; ``cascade`` screens by itself."""
    from ranktune.search.screening import single_shapes
    from ranktune.search.strategies import TrialRecord, get_proposer, propose_next

    flags = argparse.Namespace(
        quick=False, no_adalora=True, no_eva=True, strategies="perfmodel,perfmodel+screen"
    )
    config = replace(bench.config_from(flags), budget_rank=2)
    assert config.strategies == ("perfmodel", "perfmodel+screen")
    space = common.make_space(*common.TASKS["fashion"], 2)
    screened = make_context(*common.TASKS["fashion"], "perfmodel+screen", 0, config, space)
    assert (
        screened.screen and not make_context(*common.TASKS["fashion"], "perfmodel", 0, config, space).screen
    )
    cascade = replace(config, fidelity=(66, 600, 3))
    assert make_context(*common.TASKS["fashion"], "cascade", 0, cascade, space).screen
    uniform = TrialRecord(0, "succeeded", space.uniform(), 0, 0.8)
    first = propose_next(get_proposer("perfmodel"), screened, 1, (uniform,))
    assert first.schedule == space.to_schedule(single_shapes(space)[0].vector)


def test_a_recheck_label_reruns_the_best_proxies_and_plans_by_their_means() -> None:
    """``perfmodel+screen+recheck`` is the same search as ``perfmodel+screen`` up to its last proxy
    trial, then re-runs the ``config.recheck`` best with another seed, as the service's confirm.recheck."""
    from ranktune.search.confirm import RECHECK_SEED_OFFSET, ranked

    config = common.Config(tasks=("tiny-vlm",), strategies=("perfmodel+screen+recheck",), trials=10, steps=12,
                           recheck=2)  # fmt: skip
    space = common.make_space(*common.TASKS["tiny-vlm"])
    plain = make_context(*common.TASKS["tiny-vlm"], "perfmodel+screen", 0, config, space)
    checked = make_context(*common.TASKS["tiny-vlm"], "perfmodel+screen+recheck", 0, config, space)
    assert checked == plain, "the same search up to its last proxy trial"
    assert common.base_strategy("perfmodel+screen+recheck") == "perfmodel" and checked.screen
    rungs = common.Config(tasks=("tiny-vlm",), trials=10, steps=12, fidelity=(4, 36, 3))
    cascade = make_context(*common.TASKS["tiny-vlm"], "cascade+recheck", 0, rungs, space)
    assert cascade == make_context(*common.TASKS["tiny-vlm"], "cascade", 0, rungs, space)
    assert cascade.fidelity is not None and cascade.screen  # the service's cascade: rungs, probe, shapes
    runner = SyntheticRunner(config, len(space.sites))
    history = run_search(runner, plain, "perfmodel+screen", NoBar())  # type: ignore[arg-type]
    runner = SyntheticRunner(config, len(space.sites))
    rechecked = run_search(runner, checked, "perfmodel+screen+recheck", NoBar())  # type: ignore[arg-type]
    assert [t.schedule for t in rechecked[:10]] == [t.schedule for t in history]
    best = ranked(history, "maximize")[:2]
    assert [(t.number, t.schedule, t.proxy_seed) for t in rechecked[10:]] == [
        (10 + i, b.schedule, b.proxy_seed + RECHECK_SEED_OFFSET) for i, b in enumerate(best)
    ]
    assert len(runner.calls) == 12
    flags = argparse.Namespace(quick=False, strategies="perfmodel+screen+recheck", recheck=4,
                               no_adalora=False, no_eva=False)  # fmt: skip
    assert bench.config_from(flags).recheck == 4
