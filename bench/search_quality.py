"""Search quality: uniform vs random vs tpe vs perfmodel at equal trainable parameters, in process.

For each task, strategy and search seed, ``trials`` proxy fine-tunes run one after the other; each
proposal comes from the service's own proposer code (``search.strategies.propose_next`` with the
context ``service.searching.search_context`` builds from a spec with default settings), fed the
history of the trials before it, as the service does with parallelism 1 and no transfer from
earlier searches. Then, as the service's confirmation does (``search.confirm.plan``), the top-k
proxy schedules and the uniform baseline run at full length with several seeds, on the test split.

Figures per task: confirmed test accuracy of each strategy's proxy-best schedule and its gain over
uniform; the trials perfmodel needed to reach tpe's best-of-N proxy objective; the performance
model's Spearman on held-out proxy trials against the number it was fitted on; proxy-vs-full-length
Spearman; PEFT AdaLoRA (init_r 12 → target_r 8) trained by the same proxy loop. ``--model-speed``:
fit the performance model on 10k synthetic trials and score 10k candidates.

Finished fine-tunes go to ``--store FILE`` (JSONL): a rerun with the same file trains only what is
missing. ``--jobs N`` trains in N processes (searches of different strategies and seeds, and the
confirmation runs, side by side; each search stays sequential).

Multi-fidelity (ASHA): ``--fidelity MIN:MAX:ETA`` (default none; e.g. ``67:600:3``, rungs of 67, 201
and 600 steps) lets ``--strategies`` name ``random+asha``, ``tpe+asha`` and ``perfmodel+asha`` beside
the others (without ``--fidelity`` a ``+asha`` label is an error). Such a search runs the base proposer
with the context the service builds from a spec that has this ``fidelity`` and no ``proxy.steps``: new
schedules start at the lowest rung and the best 1/eta go up a rung (``search.rungs``); a promotion
re-trains its schedule with the same proxy seed for the next rung's steps. Each trial trains its own
steps on val, and the search is compute-matched: it proposes until its trials' steps reach ``trials``
x ``steps`` (what a plain search trains), so it overshoots by less than one top-rung run. Its proxy
best is the best trial of the highest rung reached (the order ``search.confirm.plan`` confirms in), its
compute counts every trial at its own length, and the report lists its trials per rung. The
proxy-vs-full Spearman and the performance model's figures use only trials of ``steps`` steps. With
``--jobs`` a ``+asha`` search is history-dependent whatever its proposer (promotions follow results):
only its trial 0 is trained ahead.

Each set of tasks has its own RESULTS.md section ("Search quality (tiny-vlm)"), so a run on one task
leaves the other's figures as they are.

The issue's protocol (tiny-vlm about 5 h of 2 cores, MiniLM about 40 core-hours):
  .venv/bin/python bench/search_quality.py --jobs 2 --store F --write
The quick preset:  .venv/bin/python bench/search_quality.py --quick --write
Model speed:  .venv/bin/python bench/search_quality.py --model-speed --write
ASHA beside the plain search (2,400 proxy steps each in the quick preset):
  .venv/bin/python bench/search_quality.py --quick --strategies perfmodel,perfmodel+asha --fidelity 67:600:3
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.search_quality_bench import TaskBench, proxy_best, trials_to_reach
from bench.search_quality_common import (
    ASHA_STRATEGIES,
    FULL,
    QUICK,
    RECHECK_STRATEGIES,
    SCREEN_STRATEGIES,
    STRATEGIES,
    TASKS,
    Config,
    has_probe,
    is_asha,
    mean_std,
    objective,
    probe_length,
    rungs,
    trial_start,
)
from bench.search_quality_probe import probe_cost
from bench.search_quality_runs import RunStore
from ranktune.search.confirm import SEED_OFFSET, ConfirmResult, summarize
from ranktune.search.paired import decode_outcomes, paired_gain
from ranktune.search.perfmodel import spearman, spearman_interval
from ranktune.search.schedule import RankSchedule


def confirmed_runs(bench: TaskBench, schedule: RankSchedule, search_seed: int) -> dict[int, Any]:
    """``index -> (test metric, outcomes or None)`` of a schedule's confirmation runs for one search seed;
    the index (search seed, confirm seed number) pairs them with uniform's runs of the same seeds."""
    runs: dict[int, Any] = {}
    for number in range(bench.config.confirm_seeds):
        seed = SEED_OFFSET + search_seed + number
        value = bench.full_run(schedule, seed)
        record = bench.store.get(
            bench.runner.lora_key(schedule.ranks, seed, bench.config.confirm_steps, "test")
        )
        text = (record or {}).get("extra", {}).get("outcomes")
        runs[search_seed * 1000 + number] = (value, decode_outcomes(text) if text else None)
    return runs


def seconds_of(bench: TaskBench, ranks: tuple[int, ...], seed: int, steps: int, split: str,
               start: int = 0) -> float:  # fmt: skip
    record = bench.store.get(bench.runner.lora_key(ranks, seed, steps, split, start))
    return float(record["wall_s"]) if record else 0.0


def strategy_figures(bench: TaskBench) -> dict[str, Any]:
    baseline = [v for seed in bench.seeds for v in bench.confirmed(bench.uniform, seed)]
    uniform_runs = {
        k: v for seed in bench.seeds for k, v in confirmed_runs(bench, bench.uniform, seed).items()
    }
    c = bench.config
    full_run_s = statistics.mean(
        seconds_of(bench, bench.uniform.ranks, SEED_OFFSET + seed + n, c.confirm_steps, "test")
        for seed in bench.seeds for n in range(c.confirm_seeds)
    )  # fmt: skip
    plans = bench.plans()
    figures: dict[str, Any] = {}
    for strategy, by_seed in bench.histories.items():
        best = {seed: proxy_best(h) for seed, h in by_seed.items()}
        best_runs = {
            k: v for seed, b in best.items() for k, v in confirmed_runs(bench, b.schedule, seed).items()
        }
        paired = paired_gain(best_runs, uniform_runs)
        starts = {seed: [trial_start(t, h, c) for t in h] for seed, h in by_seed.items()}
        proxy_s = sum(seconds_of(bench, t.schedule.ranks, t.proxy_seed, bench.trial_steps(t), "val", start)
                      for seed, h in by_seed.items()
                      for t, start in zip(h, starts[seed], strict=True))  # fmt: skip
        probes = {seed: probe_cost(bench.runner, bench.space, seed, probe_length(c)) if has_probe(strategy)
                  else (0.0, 0) for seed in by_seed}  # fmt: skip
        proxy_s += sum(seconds for seconds, _ in probes.values())
        confirm_s = sum(seconds_of(bench, r.schedule.ranks, r.seed, c.confirm_steps, "test")
                        for seed in bench.seeds for r in plans[(strategy, seed)])  # fmt: skip
        per_search = (proxy_s + confirm_s) / len(bench.seeds)  # one search and its confirmation
        values = [v for seed, b in best.items() for v in bench.confirmed(b.schedule, seed)]
        runs = [[ConfirmResult(r.confirms, r.seed, bench.full_run(r.schedule, r.seed))
                 for r in plans[(strategy, seed)]] for seed in bench.seeds]  # fmt: skip
        results = [summarize(r, "maximize") for r in runs]
        figures[strategy] = {
            "proxy_best": mean_std([objective(b) for b in best.values()]),
            "confirmed": mean_std(values),
            "gain_points": 100 * (statistics.mean(values) - statistics.mean(baseline)),
            "service_result": mean_std([v for r in results if r for v in r["winner"]["objectives"]]),
            "paired": paired.to_json() if paired else None,
            "compute": {"proxy_s": proxy_s, "confirm_s": confirm_s, "full_run_s": full_run_s,
                        "full_runs": per_search / full_run_s if full_run_s else None},
            "proxy_steps": {seed: sum(bench.trial_steps(t) for t in h) - sum(starts[seed]) + probes[seed][1]
                            for seed, h in by_seed.items()},  # trained steps: a resumed run's added ones
            "probe_steps": {seed: probes[seed][1] for seed in by_seed} if has_probe(strategy) else None,
            "confirms": {seed: sorted({r.confirms for r in plans[(strategy, seed)]}) for seed in by_seed},
            "trials": {seed: [{"number": t.number, "ranks": t.schedule.ranks, "seed": t.proxy_seed,
                               "objective": t.objective, "rung": t.rung, "config": t.config_number,
                               "steps": bench.trial_steps(t), "start": start}
                              for t, start in zip(h, starts[seed], strict=True)]
                       for seed, h in by_seed.items()},
        }  # fmt: skip
        fidelity = rungs(c)
        if is_asha(strategy) and fidelity is not None:
            figures[strategy]["rungs"] = {
                "steps": list(fidelity.rungs),
                "eta": fidelity.eta,
                "counts": {seed: [sum(t.rung == r for t in h) for r in range(len(fidelity.rungs))]
                           for seed, h in by_seed.items()},
                "best_rung": {seed: b.rung for seed, b in best.items()},
                "resumed": c.resume,
            }  # fmt: skip
    return {"uniform_confirmed": mean_std(baseline), "strategies": figures}


def perfmodel_reach(bench: TaskBench) -> list[dict[str, Any]] | None:
    if not {"tpe", "perfmodel"} <= set(bench.histories):
        return None
    reach = []
    for seed in bench.seeds:
        target = objective(proxy_best(bench.histories["tpe"][seed]))
        trials = trials_to_reach(bench.histories["perfmodel"][seed], target)
        reach.append({"seed": seed, "tpe_best": target, "perfmodel_trials": trials})
    return reach


def proxy_vs_full(bench: TaskBench) -> dict[str, Any]:
    """Per distinct schedule run at full length: mean proxy objective (val) vs mean full-length (test)."""
    proxy: dict[RankSchedule, list[float]] = {}
    for _, t in bench.proxy_trials(same_length=True):  # +asha trials of other lengths left out
        proxy.setdefault(t.schedule, []).append(objective(t))
    full: dict[RankSchedule, list[float]] = {}
    for (schedule, _, steps, split), value in bench.runner.cache.items():
        if steps == bench.config.confirm_steps and split == "test" and schedule in proxy:
            full.setdefault(schedule, []).append(value)
    pairs = [(statistics.mean(proxy[s]), statistics.mean(v)) for s, v in full.items()]
    rho = (
        spearman(np.asarray([p for p, _ in pairs]), np.asarray([f for _, f in pairs]))
        if len(pairs) > 2
        else None
    )
    interval = spearman_interval(np.asarray([p for p, _ in pairs]), np.asarray([f for _, f in pairs]))
    return {"schedules": len(pairs), "extra_schedules": len(bench.extra), "spearman": rho,
            "spearman_ci": list(interval) if interval else None, "pairs": pairs}  # fmt: skip


def run_task(name: str, config: Config, progress: bool, store: RunStore, jobs: int,
             threads: int) -> dict[str, Any]:  # fmt: skip
    bench = TaskBench(name, config, progress, store, jobs, threads)
    bench.search()
    bench.confirm()
    noise = [objective(t) for h in bench.histories.get("uniform", {}).values() for t in h]
    return {
        "task": bench.task, "model": bench.model, "sites": len(bench.space.sites),
        "budget_params": bench.space.budget.params, **strategy_figures(bench),
        "perfmodel_reach": perfmodel_reach(bench), **_model_figures(bench),
        "proxy_vs_full": proxy_vs_full(bench),
        "uniform_proxy_over_seeds": mean_std(noise) if len(noise) > 1 else None,
        "adalora": _adalora(bench) if config.adalora else None,
        "eva": _eva(bench) if config.eva else None,
        "runs": bench.runner.runs, "train_seconds": bench.runner.seconds,
    }  # fmt: skip


def _model_figures(bench: TaskBench) -> dict[str, Any]:
    from bench.search_quality_model import model_figures

    return model_figures(bench)


def _eva(bench: TaskBench) -> dict[str, Any]:
    from bench.search_quality_eva import run_eva

    return run_eva(bench)


def _adalora(bench: TaskBench) -> dict[str, Any]:
    from bench.search_quality_adalora import run_adalora

    return run_adalora(bench)


def run(config: Config, progress: bool = True, store: Path | None = None, jobs: int = 1,
        threads: int = 1) -> dict[str, Any]:  # fmt: skip
    """The whole benchmark, one entry per task (the smoke test calls this). ``store``: the JSONL file of
    finished fine-tunes to resume from and append to; ``jobs`` > 1 trains in that many processes."""
    start = time.perf_counter()
    runs = RunStore(store)
    tasks = {name: run_task(name, config, progress, runs, jobs, threads) for name in config.tasks}
    trained_s = sum(float(record.get("wall_s") or 0.0) for record in runs.records.values())
    return {"config": asdict(config), "tasks": tasks, "wall_s": time.perf_counter() - start,
            "store_train_s": trained_s}  # fmt: skip


# --- RESULTS.md ---------------------------------------------------------------------------------


def parse_fidelity(text: str) -> tuple[int, int, int]:
    """``--fidelity MIN:MAX:ETA`` as the service's spec checks it (``fidelity`` of ``SearchCreate``)."""
    from pydantic import ValidationError

    from ranktune.service.schemas.spec import FidelitySpec

    try:
        low, high, eta = (int(part) for part in text.split(":"))
    except ValueError:
        raise SystemExit(f"--fidelity: MIN:MAX:ETA, whole numbers (e.g. 67:600:3), got {text!r}") from None
    try:
        FidelitySpec(min_steps=low, max_steps=high, eta=eta)
    except ValidationError as e:
        raise SystemExit(f"--fidelity: {'; '.join(err['msg'] for err in e.errors())}") from None
    return low, high, eta


def config_from(args: argparse.Namespace) -> Config:
    preset = QUICK if args.quick else FULL
    values: dict[str, Any] = {}
    for f in fields(Config):
        given = getattr(args, f.name, None)
        if given is not None and f.name in ("tasks", "strategies"):
            given = tuple(given.split(","))
            known = TASKS if f.name == "tasks" else (*STRATEGIES, *SCREEN_STRATEGIES, *ASHA_STRATEGIES,
                                                      *RECHECK_STRATEGIES)  # fmt: skip
            if any(g not in known for g in given):
                raise SystemExit(f"--{f.name}: choose from {', '.join(known)}, got {','.join(given)}")
        if given is not None and f.name == "fidelity":
            given = parse_fidelity(given)
        values[f.name] = getattr(preset, f.name) if given is None else given
    asha = [s for s in values["strategies"] if is_asha(s)]
    if asha and values["fidelity"] is None:
        raise SystemExit(f"--strategies: {', '.join(asha)} search(es) over rungs: give --fidelity "
                         "MIN:MAX:ETA (e.g. 67:600:3)")  # fmt: skip
    if values["resume"] and not asha:
        raise SystemExit("--resume: only the promotions of +asha strategies go on from a rung below")
    if values["fidelity"] is not None and not asha:
        raise SystemExit("--fidelity: only +asha strategies use it; add one to --strategies "
                         f"(e.g. {ASHA_STRATEGIES[0]})")  # fmt: skip
    return Config(**{**values, "adalora": preset.adalora and not args.no_adalora,
                      "eva": preset.eva and not args.no_eva})  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the ~40-minute preset (default: the issue's)")
    parser.add_argument("--tasks", help=f"comma-separated, of {','.join(TASKS)}")
    plain = ",".join((*STRATEGIES, *SCREEN_STRATEGIES, *RECHECK_STRATEGIES))
    parser.add_argument("--strategies", help=f"comma-separated, of {plain} and, with "
                        f"--fidelity, {','.join(ASHA_STRATEGIES)}")  # fmt: skip
    parser.add_argument("--fidelity", metavar="MIN:MAX:ETA", help="rungs of the +asha strategies' "
                        "searches (e.g. 67:600:3: 67, 201 and 600 steps); default: none")  # fmt: skip
    for flag in ("trials", "seeds", "steps", "confirm-steps", "confirm-seeds", "top-k", "rank-schedules"):
        parser.add_argument(f"--{flag}", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--resume", action="store_true", default=None, help="a +asha promotion goes on "
                        "from its rung below's training state, as the service's fidelity.resume (default: "
                        "trains from the start)")  # fmt: skip
    parser.add_argument("--recheck", type=int, help="proxies a +recheck search re-runs with another seed "
                        "before confirmation, ranked by their mean (default 3)")  # fmt: skip
    parser.add_argument("--budget-rank", type=int, help="the budget: uniform LoRA of this rank on every "
                        "site (default 8)")  # fmt: skip
    parser.add_argument("--no-adalora", action="store_true")
    parser.add_argument("--no-eva", action="store_true")
    parser.add_argument("--device", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: on shared cores "
                        "2 threads spin-waited 5x slower per step than 1 here)")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=1, help="processes that train "
                        "at once (default 1): searches (each sequential) and confirmation runs")  # fmt: skip
    parser.add_argument("--store", type=Path, help="JSONL file of finished fine-tunes: a rerun with the same "
                        "file trains only what is missing (needed for --jobs > 1)")  # fmt: skip
    parser.add_argument("--model-speed", action="store_true", help="only time the performance model")
    parser.add_argument("--write", action="store_true", help="update this part's section of bench/RESULTS.md")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument(
        "--from-json", type=Path, help="render (and --write) saved results instead of running"
    )
    args = parser.parse_args(argv)
    command = shlex.join(
        [".venv/bin/python", "bench/search_quality.py", *(sys.argv[1:] if argv is None else argv)]
    )
    if args.from_json:
        results: dict[str, Any] = json.loads(args.from_json.read_text())
    elif args.model_speed:
        from bench.search_quality_model import model_speed

        results = {
            "command": command,
            "date": datetime.date.today().isoformat(),
            "model_speed": model_speed(),
        }
    else:
        import torch

        torch.set_num_threads(args.threads)
        config = config_from(args)
        if args.jobs < 1 or (args.jobs > 1 and args.store is None):
            raise SystemExit("--jobs: a whole number >= 1; more than 1 needs --store FILE")
        print(f"{config}, {args.jobs} job(s) of {args.threads} torch thread(s)", file=sys.stderr)
        figures = run(config, store=args.store, jobs=args.jobs, threads=args.threads)
        results = {"command": command, "date": datetime.date.today().isoformat(), "threads": args.threads,
                   "jobs": args.jobs, **figures}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    from bench.search_quality_report import quality_heading, render_quality, render_speed, wrap, write_section

    if "model_speed" in results:
        heading, body = "Performance model speed", render_speed(results)
    else:
        heading, body = quality_heading(results), render_quality(results)
    body = wrap(body)
    print(body)
    if args.write:
        write_section(heading, body)


if __name__ == "__main__":
    main()
