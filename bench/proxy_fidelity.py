"""Proxy fidelity: which proxy fine-tune ranks rank schedules as the full-length run does?

A search ranks schedules by a short proxy; what the user keeps is the schedule's full-length score.
The reference here is every LoRA schedule that a store of ``bench/search_quality.py`` holds at full
length on the test split (mean over its stored seeds). Each variant is a proxy setting (steps,
learning rate, proxy seeds whose scores are averaged); its proxies run on the val split, the runs it
needs go to the same store (a rerun trains only what is missing), and all variants are scored on the
same schedules in one run:

- Spearman of the proxy against the reference, with a bootstrap 95% interval over schedules, and the
  share of bootstrap resamples in which the variant beats the first variant (paired);
- the reference score of the proxy's top 5 against the best 5 and the mean of all: what a search that
  trusts this proxy keeps;
- repeatability: Spearman between two proxy seeds (variants with 2 seeds or more);
- seconds per proxy fine-tune and the cost ratio to the first variant;
- what each one rewards: Spearman of each tower's share of the adapter parameters with the reference
  and with each proxy (a proxy that rewards a tower more than the full-length run does steers a search
  there).

Command (tiny-vlm, the store of the search-quality run):
    .venv/bin/python bench/proxy_fidelity.py --store bench/runs/search_quality.jsonl --jobs 2 --write
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import shlex
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results_md import machine, table, wrap, write_section
from bench.search_quality_bench import TaskBench, train_job
from bench.search_quality_common import Config
from bench.search_quality_runs import RunStore, in_pool
from ranktune.search.perfmodel import spearman

TOP = 5  # the proxy's top schedules whose reference score is reported
BOOTSTRAP = 2000
LEVEL = 0.95  # the bootstrap interval's coverage


@dataclass(frozen=True)
class Variant:
    label: str
    steps: int = 200
    lr: float = 1e-3
    seeds: tuple[int, ...] = (0,)

    @classmethod
    def parse(cls, text: str) -> Variant:
        """``label:steps=400,lr=0.003,seeds=0+1`` (fields not named keep the defaults)."""
        label, _, spec = text.partition(":")
        values: dict[str, Any] = {}
        for item in filter(None, spec.split(",")):
            name, _, value = item.partition("=")
            if name == "steps":
                values["steps"] = int(value)
            elif name == "lr":
                values["lr"] = float(value)
            elif name == "seeds":
                values["seeds"] = tuple(int(s) for s in value.split("+"))
            else:
                raise SystemExit(f"--variant {text!r}: unknown field {name!r} (steps, lr, seeds)")
        if not label or not values.get("seeds", (0,)):
            raise SystemExit(f"--variant {text!r}: give label:field=value,...")
        return cls(label, **values)


DEFAULT_VARIANTS = (
    Variant("default: 200 steps, lr 1e-3"),
    Variant("200 steps, mean of 2 proxy seeds", seeds=(0, 1)),
    Variant("200 steps, lr 3e-3", lr=3e-3),
    Variant("400 steps", steps=400),
)


def reference(bench: TaskBench, full_steps: int,
              seeds: Sequence[int] | None = None) -> dict[tuple[int, ...], dict[int, float]]:  # fmt: skip
    """Ranks → {seed: full-length test score} of every LoRA schedule in the store, at the bench's
    lr/batch (only ``seeds`` where given)."""
    probe = json.loads(bench.runner.lora_key((), 0, full_steps, "test"))
    found: dict[tuple[int, ...], dict[int, float]] = {}
    for record in bench.store.records.values():
        key = json.loads(record["key"])
        ranks = key.pop("ranks", None)
        seed = key.pop("seed")
        if seeds is not None and seed not in seeds:
            continue
        if ranks is not None and key == {k: v for k, v in probe.items() if k not in ("ranks", "seed")}:
            found.setdefault(tuple(ranks), {})[seed] = float(record["metric"])
    return dict(sorted(found.items()))


def paired_reference(bench: TaskBench, full_steps: int, seeds: Sequence[int], limit: int | None,
                     jobs: int, threads: int) -> dict[tuple[int, ...], dict[int, float]]:  # fmt: skip
    """The reference on the same full-length ``seeds`` for every schedule: a seed's luck moves every
    schedule it trains (on tweets, seeds 1000 and 1001 differ by more than the schedules do), so
    schedules scored on different seeds do not compare. Takes the ``limit`` schedules the store holds
    with the most of those seeds (the missing runs cost least) and trains their missing runs on test."""
    held = reference(bench, full_steps, seeds)
    order = sorted(held, key=lambda ranks: -len(held[ranks]))  # stable: ties keep the ranks order
    chosen = sorted(order[:limit])
    missing = [(ranks, seed) for ranks in chosen for seed in seeds if seed not in held[ranks]]
    if jobs > 1 and missing:
        calls = [(train_job, (ranks, seed, full_steps, "test")) for ranks, seed in missing]
        in_pool(bench, "full-length seeds", calls)
    from ranktune.search.schedule import RankSchedule

    for ranks, seed in missing:  # in this process with one job; recalled from the store after the pool
        schedule = RankSchedule(bench.space.sites, ranks, bench.space.alpha)
        bench.runner.metric(schedule, seed, full_steps, "test")
    done = reference(bench, full_steps, seeds)
    return {ranks: done[ranks] for ranks in chosen}


def proxy_scores(bench: TaskBench, variant: Variant, schedules: Sequence[tuple[int, ...]],
                 jobs: int, threads: int) -> tuple[np.ndarray, float]:  # fmt: skip
    """Per schedule and proxy seed, the variant's val score (trained where missing); seconds per run."""
    vbench = TaskBench(bench.name, replace(bench.config, lr=variant.lr), progress=bench.progress,
                       store=bench.store, jobs=jobs, threads=threads)  # fmt: skip
    runs = [(ranks, seed) for ranks in schedules for seed in variant.seeds]
    keys = {run: vbench.runner.lora_key(*run, variant.steps, "val") for run in runs}
    missing = [run for run in runs if vbench.store.get(keys[run]) is None]
    if jobs > 1 and missing:
        in_pool(vbench, variant.label, [(train_job, (r, s, variant.steps, "val")) for r, s in missing])
    from ranktune.search.schedule import RankSchedule

    scores = np.empty((len(schedules), len(variant.seeds)))
    walls = []
    with vbench.bar(variant.label, len(runs)) as bar:
        for i, ranks in enumerate(schedules):
            for j, seed in enumerate(variant.seeds):
                schedule = RankSchedule(vbench.space.sites, ranks, vbench.space.alpha)
                scores[i, j] = vbench.runner.metric(schedule, seed, variant.steps, "val")
                walls.append(float(vbench.store.records[keys[(ranks, seed)]]["wall_s"]))
                bar.update(1)
    return scores, statistics.mean(walls)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho; NaN where either side is constant (no ranking to compare)."""
    value = spearman(a, b)
    return math.nan if value is None else value


def tails(level: float) -> tuple[float, float]:
    return (1 - level) / 2, (1 + level) / 2


def fidelity(proxy: np.ndarray, full: np.ndarray, base: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """How ``proxy`` (per schedule) ranks ``full``; bootstrap against ``base``, another proxy."""
    rng = np.random.default_rng(seed)
    rho = corr(proxy, full)
    boot, wins = [], 0
    for _ in range(BOOTSTRAP):
        pick = rng.integers(0, len(full), len(full))
        value = corr(proxy[pick], full[pick])
        boot.append(value)
        wins += value > corr(base[pick], full[pick])
    ranked = [b for b in boot if not math.isnan(b)]  # resamples with a constant side rank nothing
    top = np.argsort(-proxy, kind="stable")[:TOP]
    return {
        "spearman": rho,
        "interval": [float(np.quantile(ranked, q)) if ranked else math.nan for q in tails(LEVEL)],
        "beats_first": wins / BOOTSTRAP,
        "top_full": float(full[top].mean()),
        "proxy_best_full": float(full[top[0]]),
    }


def tower_shares(bench: TaskBench, schedules: Sequence[tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Each tower's share of a schedule's adapter parameters, per schedule."""
    sites = bench.space.sites
    mass = np.asarray(schedules, dtype=float) * np.asarray([s.in_features + s.out_features for s in sites])
    total = mass.sum(axis=1)
    towers = dict.fromkeys(s.tower for s in sites)
    return {t: mass[:, [i for i, s in enumerate(sites) if s.tower == t]].sum(axis=1) / total for t in towers}


def run(task: str, variants: Sequence[Variant], store: Path, full_steps: int = 600, jobs: int = 1,
        threads: int = 1, progress: bool = True, limit: int | None = None,
        full_seeds: Sequence[int] | None = None) -> dict[str, Any]:  # fmt: skip
    """Every variant on the store's full-length schedules of ``task`` (the first ``limit`` of them);
    with ``full_seeds``, on schedules scored on exactly those seeds (missing runs trained)."""
    bench = TaskBench(task, Config(tasks=(task,)), progress=progress, store=RunStore(store), jobs=jobs,
                      threads=threads)  # fmt: skip
    if full_seeds:
        scored = paired_reference(bench, full_steps, full_seeds, limit, jobs, threads)
    else:
        scored = dict(list(reference(bench, full_steps).items())[:limit])
    full_by = {ranks: list(by_seed.values()) for ranks, by_seed in scored.items()}
    schedules = list(full_by)
    if len(schedules) < 3:
        raise SystemExit(
            f"{store}: {len(schedules)} schedules at {full_steps} steps on test; need 3 or more "
            "(store keys include the torch thread count and device: use the store's --threads)"
        )
    full = np.array([statistics.mean(full_by[s]) for s in schedules])
    repeated = [full_by[s] for s in schedules if len(full_by[s]) > 1]
    shares = tower_shares(bench, schedules)
    rows, first = [], None
    for variant in variants:
        scores, seconds = proxy_scores(bench, variant, schedules, jobs, threads)
        proxy = scores.mean(axis=1)
        first = proxy if first is None else first
        row = {"variant": asdict(variant), "seconds": seconds, **fidelity(proxy, full, first),
               "towers": {t: corr(share, proxy) for t, share in shares.items()}}  # fmt: skip
        if scores.shape[1] > 1:
            row["seed_spearman"] = corr(scores[:, 0], scores[:, 1])
        rows.append(row | {"proxy": proxy.tolist()})
    pair = list(full_seeds or [])[:2]
    by_seed = [np.array([scored[s][seed] for s in schedules]) for seed in pair]
    seed_rho = corr(*by_seed) if len(pair) == 2 else None
    return {
        "task": task, "full_steps": full_steps, "schedules": len(schedules),
        "full_seed_list": list(full_seeds or []),
        "full_seed_spearman": seed_rho,
        "full_seeds": statistics.mean(len(full_by[s]) for s in schedules),
        "full": full.tolist(), "best_full": float(np.sort(full)[-TOP:].mean()),
        "full_seed_std": statistics.mean(statistics.stdev(v) for v in repeated) if repeated else None,
        "full_repeated": len(repeated), "full_spread": float(np.std(full, ddof=1)),
        "mean_full": float(full.mean()),
        "towers": {t: corr(share, full) for t, share in shares.items()}, "variants": rows,
    }  # fmt: skip


def cost(row: dict[str, Any]) -> int:
    """Training steps per schedule: one run per proxy seed (wall times of runs trained under other
    loads are not comparable; steps are)."""
    return int(row["variant"]["steps"]) * len(row["variant"]["seeds"])


def render(results: dict[str, Any]) -> str:
    first = results["variants"][0]
    level = results.get("level", 0.90)  # results saved before the level was recorded used 90%
    header = ["variant", "Spearman vs full", f"{100 * level:.0f}% interval", "beats the first (bootstrap)",
              f"full score of the proxy's top {TOP} (%)", "proxy best's full score (%)",
              "proxy seed vs seed Spearman", "s per proxy run", "cost (steps)"]  # fmt: skip
    rows = []
    for row in results["variants"]:
        low, high = row["interval"]
        seeds = row.get("seed_spearman")
        rows.append([
            row["variant"]["label"], signed(row["spearman"]), f"{signed(low)} to {signed(high)}",
            "-" if row is first else f"{100 * row['beats_first']:.0f}%", f"{100 * row['top_full']:.1f}",
            f"{100 * row['proxy_best_full']:.1f}", "-" if seeds is None else signed(seeds),
            f"{row['seconds']:.0f}", f"{cost(row) / cost(first):.2f}x",
        ])  # fmt: skip
    lines = [
        f"Command: `{results['command']}` ({results['date']}, {results['machine']}, {results['threads']} "
        f"torch thread(s) per process, {results['jobs']} process(es))",
        "",
        f"Reference: the {results['schedules']} LoRA schedules of `{results['task']}` that the store holds "
        f"at {results['full_steps']} steps on the test split (mean of {results['full_seeds']:.1f} seeds "
        "each); "
        f"their best {TOP} score {100 * results['best_full']:.1f}% on average, all "
        f"{100 * results['mean_full']:.1f}%; std across schedules {100 * results['full_spread']:.1f} "
        f"points{seed_noise(results)}. Proxies run on the val split; a variant with several proxy "
        "seeds is scored by their mean and costs that many fine-tunes. Cost: training steps per "
        "schedule against the first variant; seconds per run as measured (runs trained beside others "
        "take longer).",
        "",
        table(header, rows),
    ]
    shares = {f"reference ({results['full_steps']} steps, test)": results["towers"]}
    shares.update((r["variant"]["label"], r["towers"]) for r in results["variants"])
    if any(not math.isnan(v) for share in shares.values() for v in share.values()):  # one tower: no table
        lines += [
            "",
            "What each one rewards: Spearman of a tower's share of the adapter parameters with the score.",
            "",
            table(
                ["score", *(f"{t} share" for t in results["towers"])],
                [[label, *map(signed, share.values())] for label, share in shares.items()],
            ),
        ]
    return "\n".join(lines)


def seed_noise(results: dict[str, Any]) -> str:
    text = ""
    if results.get("full_seed_std"):
        text = f", std across seeds of one schedule {100 * results['full_seed_std']:.1f} points (mean over " \
            f"the {results['full_repeated']} schedules run with several seeds)"  # fmt: skip
    seeds = results.get("full_seed_list")
    if seeds:  # paired full-length seeds (--full-seeds), whether or not the runs' scores varied
        text += f"; every schedule on seeds {', '.join(map(str, seeds))}"
        if results.get("full_seed_spearman") is not None:
            rho = signed(results["full_seed_spearman"])
            pair = f"seeds {seeds[0]} and {seeds[1]}"
            text += f", and the full-length runs' own seed vs seed Spearman ({pair}) is {rho}"
    return text


def signed(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.2f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--task", default="tiny-vlm", help="a task of bench/search_quality.py")
    parser.add_argument("--store", type=Path, default=Path("bench/runs/search_quality.jsonl"))
    parser.add_argument("--full-steps", type=int, default=600, help="the reference runs' length")
    parser.add_argument("--variant", action="append", type=Variant.parse,
                        help="label:steps=N,lr=X,seeds=A+B (repeat; the first is the baseline)")  # fmt: skip
    parser.add_argument("--limit", type=int, help="only the first N reference schedules")
    parser.add_argument("--full-seeds", type=lambda text: [int(s) for s in text.split(",")],
                        help="score every schedule on these full-length seeds (e.g. 1000,1001), "
                        "training the missing runs")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--from-json", type=Path, help="render saved results instead of running")
    parser.add_argument("--write", action="store_true", help="update the section of bench/RESULTS.md")
    args = parser.parse_args(argv)
    if args.from_json:
        results = json.loads(args.from_json.read_text())
    else:
        import torch

        torch.set_num_threads(args.threads)  # part of every store key, as in search_quality.py
        figures = run(args.task, args.variant or DEFAULT_VARIANTS, args.store, args.full_steps, args.jobs,
                      args.threads, limit=args.limit, full_seeds=args.full_seeds)  # fmt: skip
        command = [".venv/bin/python", "bench/proxy_fidelity.py", *(sys.argv[1:] if argv is None else argv)]
        results = {"command": shlex.join(command), "date": datetime.date.today().isoformat(),
                   "machine": machine(), "threads": args.threads, "jobs": args.jobs, "level": LEVEL,
                   **figures}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    body = wrap(render(results))
    print(body)
    if args.write:
        write_section(f"Proxy fidelity ({results['task']})", body)


if __name__ == "__main__":
    main()
