"""Promotions that go on from the rung below against promotions that train from the start.

A multi-fidelity search (spec ``fidelity``) trains a promoted schedule again at the next rung's length.
With ``fidelity.resume`` (the default) its worker goes on from the rung below's training state
(``trainer.resume``: adapters, optimizer moments and data position, a warm restart over the added
steps) and trains only the steps the rung adds. This bench measures, on the same schedules, seed and
rungs, side by side in one run:

- the compute: wall seconds of each rung trained from the start against the chain's segment that
  reaches it, and the full-run equivalents of an ASHA search's rung counts either way;
- what it does to the ranking: the val metric of each rung both ways, their paired difference over
  schedules with a 95% t interval, and the Spearman between the two rankings.

Every fine-tune is a line of a resumable store (``--store``): a rerun trains only what is missing.

Command (fashion-vqa at the budget of uniform rank 2, the cascade's rungs):
    .venv/bin/python bench/bench_resume.py --task fashion --budget-rank 2 --schedules 12 --jobs 2 \
        --store bench/runs/resume_fashion_r2.jsonl --write
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results_md import machine, table, wrap, write_section
from bench.search_quality_common import TASKS, make_space
from bench.search_quality_runs import RunStore, run_key
from ranktune.search.paired import t_quantile
from ranktune.search.perfmodel import spearman

SECTION = "Resumed promotions (issue 17, item 1)"
LR, BATCH = 1e-3, 32
_TASKS: dict[str, Any] = {}  # per process: the loaded task


def _task(name: str) -> Any:
    if name not in _TASKS:
        from ranktune.trainer.tasks.registry import load_task

        model, task = TASKS[name]
        _TASKS[name] = load_task(task, model)
    return _TASKS[name]


def _settings(steps: int, seed: int) -> Any:
    from ranktune.trainer.proxy import ProxySettings

    return ProxySettings(steps=steps, lr=LR, batch_size=BATCH, seed=seed)


def base_key(name: str, ranks: Sequence[int], seed: int, budget_rank: int) -> dict[str, Any]:
    from ranktune.trainer.fingerprint import base_weights_sha256

    model, _ = TASKS[name]
    return {"task": name, "ranks": list(ranks), "seed": seed, "budget_rank": budget_rank, "lr": LR,
            "batch": BATCH, "base": base_weights_sha256(model),
            "data": _task(name).data_sha256()}  # fmt: skip


def scratch_job(
    name: str, ranks: tuple[int, ...], seed: int, budget_rank: int, steps: int, store: str
) -> None:
    """One run of ``steps`` from the start, on val."""
    import torch

    from ranktune.search.schedule import RankSchedule
    from ranktune.trainer.proxy import proxy_finetune

    torch.set_num_threads(1)
    key = run_key(kind="scratch", steps=steps, **base_key(name, ranks, seed, budget_rank))
    runs = RunStore(Path(store))
    if runs.get(key) is not None:
        return
    space = make_space(*TASKS[name], budget_rank)
    result = proxy_finetune(
        _task(name), RankSchedule(space.sites, ranks, space.alpha), settings=_settings(steps, seed)
    )
    runs.put(key, result.metric, result.wall_time_s)


def chain_job(name: str, ranks: tuple[int, ...], seed: int, budget_rank: int, rungs: tuple[int, ...],
              store: str) -> None:  # fmt: skip
    """The lowest rung, then each next one going on from the state of the one below, on val."""
    import torch

    from ranktune.search.schedule import RankSchedule
    from ranktune.trainer.proxy import proxy_finetune

    torch.set_num_threads(1)
    key = run_key(kind="chain", rungs=list(rungs), **base_key(name, ranks, seed, budget_rank))
    runs = RunStore(Path(store))
    if runs.get(key) is not None:
        return
    space = make_space(*TASKS[name], budget_rank)
    schedule = RankSchedule(space.sites, ranks, space.alpha)
    metrics, walls, state = [], [], None
    for i, steps in enumerate(rungs):
        began = time.perf_counter()
        result = proxy_finetune(_task(name), schedule, settings=_settings(steps, seed), start=state,
                                keep_state=i < len(rungs) - 1)  # fmt: skip
        walls.append(time.perf_counter() - began)
        metrics.append(result.metric)
        state = result.state
    runs.put(key, metrics[-1], sum(walls), {"metrics": metrics, "walls": walls})


def schedules_for(name: str, budget_rank: int, count: int) -> list[tuple[int, ...]]:
    """Uniform, then ``count - 1`` random schedules of the search space (deterministic)."""
    space = make_space(*TASKS[name], budget_rank)
    found = [tuple(space.uniform().ranks)]
    seed = 0
    while len(found) < count:
        ranks = tuple(space.random(seed).ranks)
        seed += 1
        if ranks not in found:
            found.append(ranks)
    return found


def run_all(name: str, budget_rank: int, count: int, rungs: tuple[int, ...], seed: int, store: Path,
            jobs: int, progress: bool = True) -> dict[str, Any]:  # fmt: skip
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from tqdm import tqdm

    schedules = schedules_for(name, budget_rank, count)
    # (steps trained, job, arguments), longest first so the pool ends together
    calls: list[tuple[int, Callable[..., None], tuple[Any, ...]]] = [
        (rungs[-1], chain_job, (name, r, seed, budget_rank, rungs, str(store))) for r in schedules
    ]
    calls += [
        (steps, scratch_job, (name, r, seed, budget_rank, steps, str(store)))
        for r in schedules
        for steps in rungs[1:]
    ]
    calls.sort(key=lambda call: -call[0])
    with tqdm(total=len(calls), desc=f"{name} fine-tunes", file=sys.stderr, disable=not progress) as bar:
        if jobs > 1:
            with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
                for done in as_completed([pool.submit(fn, *args) for _, fn, args in calls]):
                    done.result()
                    bar.update(1)
        else:
            for _, fn, args in calls:
                fn(*args)
                bar.update(1)
    return summarize(name, budget_rank, schedules, rungs, seed, RunStore(store))


def interval(diffs: np.ndarray) -> tuple[float, float, float]:
    mean = float(diffs.mean())
    if len(diffs) < 2:
        return mean, math.nan, math.nan
    half = t_quantile(len(diffs) - 1) * float(diffs.std(ddof=1)) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def summarize(name: str, budget_rank: int, schedules: list[tuple[int, ...]], rungs: tuple[int, ...],
              seed: int, runs: RunStore) -> dict[str, Any]:  # fmt: skip
    chains = [runs.get(run_key(kind="chain", rungs=list(rungs), **base_key(name, r, seed, budget_rank)))
              for r in schedules]  # fmt: skip
    if any(c is None for c in chains):
        raise SystemExit("the store lacks runs: run without --report-only first")
    rows = []
    for i, steps in enumerate(rungs[1:], start=1):
        scratch = [runs.get(run_key(kind="scratch", steps=steps, **base_key(name, r, seed, budget_rank)))
                   for r in schedules]  # fmt: skip
        fresh = np.array([float(s["metric"]) for s in scratch])  # type: ignore[index]
        resumed = np.array([float(c["extra"]["metrics"][i]) for c in chains])  # type: ignore[index]
        mean, low, high = interval(100 * (resumed - fresh))
        rows.append({
            "steps": steps, "from": rungs[i - 1], "scratch_mean": float(fresh.mean()),
            "resumed_mean": float(resumed.mean()), "gain": mean, "low": low, "high": high,
            "spearman": spearman(resumed, fresh),
            "scratch_wall": statistics.mean(float(s["wall_s"]) for s in scratch),  # type: ignore[index]
            "resumed_wall": statistics.mean(float(c["extra"]["walls"][i]) for c in chains),  # type: ignore[index]
            "uniform_rank_scratch": int((fresh > fresh[0]).sum()) + 1,
            "uniform_rank_resumed": int((resumed > resumed[0]).sum()) + 1,
        })  # fmt: skip
    counts = {r: max(1, 9 // 3**r) for r in range(len(rungs))}  # ASHA at eta 3: 9, 3, 1, ...
    return {
        "task": name, "budget_rank": budget_rank, "seed": seed, "rungs": list(rungs),
        "schedules": len(schedules),
        "rows": rows, "asha_counts": counts,
        "fre_scratch": full_run_equivalents(rungs, counts, resume=False),
        "fre_resumed": full_run_equivalents(rungs, counts, resume=True),
        "base": json.loads(chains[0]["key"])["base"],  # type: ignore[index]
    }  # fmt: skip


def full_run_equivalents(rungs: tuple[int, ...], counts: dict[int, int], resume: bool) -> float:
    """Training steps of ``counts`` runs per rung, in top-rung runs; resumed, a rung trains only the
    steps it adds to the one below."""
    steps = sum(n * (rungs[r] - (rungs[r - 1] if resume and r > 0 else 0)) for r, n in counts.items())
    return steps / rungs[-1]


def signed(value: float | None) -> str:
    return "n/a (ties)" if value is None or math.isnan(value) else f"{value:+.2f}"


def pct(value: float) -> str:
    return f"{100 * value:.1f}"


def render(results: dict[str, Any], command: str) -> str:
    lines = [
        f"Measured {datetime.date.today().isoformat()} on {machine()}, one torch thread per job, "
        f"base `{results['base'][:8]}…`. Command: `{command}`.",
        "",
        f"{results['schedules']} schedules (uniform rank {results['budget_rank']} and random ones at its "
        f"parameters) on `{results['task']}`, seed {results['seed']}, rungs {results['rungs']} steps, "
        f"lr {LR}, "
        "val split. Each rung above the lowest trained from the start, and reached by going on from the rung "
        "below (warm restart over the added steps):",
        "",
    ]
    header = ["rung", "from scratch (val %)", "resumed (val %)", "resumed - scratch, points [95% CI]",
              "Spearman resumed vs scratch", "s per run: scratch / resumed segment",
              "uniform's place"]  # fmt: skip
    body = [[f"{r['steps']} (from {r['from']})", pct(r["scratch_mean"]), pct(r["resumed_mean"]),
             f"{r['gain']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}]", signed(r["spearman"]),
             f"{r['scratch_wall']:.0f} / {r['resumed_wall']:.0f} "
             f"({r['resumed_wall'] / r['scratch_wall']:.2f}x)",
             f"{r['uniform_rank_scratch']} / {r['uniform_rank_resumed']}"]
            for r in results["rows"]]  # fmt: skip
    lines.append(table(header, body))
    counts = ", ".join(f"{n} at rung {r}" for r, n in results["asha_counts"].items())
    lines += ["", f"An ASHA search with {counts} costs {results['fre_scratch']:.2f} full-run equivalents of "
              "rung "
              f"training from the start and {results['fre_resumed']:.2f} resumed "
              f"({results['fre_resumed'] / results['fre_scratch']:.2f}x)."]  # fmt: skip
    return wrap("\n".join(lines))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="fashion", choices=sorted(TASKS))
    parser.add_argument("--budget-rank", type=int, default=2)
    parser.add_argument("--schedules", type=int, default=12)
    parser.add_argument("--rungs", default="66,198,600", help="comma-separated steps, increasing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--store", type=Path, default=Path("bench/runs/resume.jsonl"))
    parser.add_argument("--json", type=Path, help="write the summary here")
    parser.add_argument("--write", action="store_true", help=f"write the section '{SECTION}' of RESULTS.md")
    args = parser.parse_args(argv)
    rungs = tuple(int(s) for s in args.rungs.split(","))
    if len(rungs) < 2 or list(rungs) != sorted(set(rungs)) or rungs[0] < 1:
        parser.error("--rungs: two or more increasing step counts")
    if args.schedules < 3:
        parser.error("--schedules: 3 or more")
    results = run_all(args.task, args.budget_rank, args.schedules, rungs, args.seed, args.store, args.jobs)
    command = "python bench/bench_resume.py " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    text = render(results, command)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
