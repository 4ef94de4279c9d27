"""Strategies on the synthetic rank-search problem of tests/search: cheap, repeatable, no training.

The objective is known (``tests.search.synthetic.objective``: diminishing returns of rank, deep
language MLPs and vision q/v matter, early language layers hurt), so every figure is the *true*
gain over uniform of the best schedule a search found (noiseless, even when the search saw noisy
values). Each strategy runs the same search seeds with the service's own proposers and
``parallel`` proposals in flight (constant liar), as the service does with that parallelism.

Figures per strategy: mean ± std over seeds of the best true gain after 8, 16 and 32 trials; the
ratio to tpe's; how many trials it needed to reach tpe's best of 32 (per seed); seconds per search.
``--variant NAME:key=value,...`` adds a perfmodel with other ``performance_model`` settings
(``pool``, ``kappa``, ``acquisition``, ``min_trials``), compared in the same run.

Run: .venv/bin/python bench/search_synthetic.py [--seeds 10] [--noise 0.0] [--write]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ranktune.search.strategies import ModelSettings, TrialRecord, get_proposer
from tests.search.synthetic import context, objective, run_search

CHECKPOINTS = (8, 16, 32)


@dataclass(frozen=True)
class Variant:
    label: str
    strategy: str
    model: ModelSettings | None = None


def parse_variant(text: str) -> Variant:
    """``label:pool=64,kappa=0`` → a perfmodel variant with those settings."""
    label, _, settings = text.partition(":")
    values: dict[str, Any] = {}
    for item in filter(None, settings.split(",")):
        key, _, value = item.partition("=")
        values[key] = value if key == "acquisition" else (int(value) if key in ("pool", "min_trials")
                                                          else float(value))  # fmt: skip
    return Variant(label, "perfmodel", ModelSettings(**values))


def true_gains(history: list[TrialRecord]) -> list[float]:
    """Best-so-far true gain over uniform after each trial."""
    uniform = objective(history[0].schedule)
    best_seen, best_true, gains = float("-inf"), 0.0, []
    for record in history:
        if record.objective is not None and record.objective > best_seen:
            best_seen, best_true = record.objective, objective(record.schedule) - uniform
        gains.append(best_true)
    return gains


def run(variants: list[Variant], seeds: int, trials: int, parallel: int, noise: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for variant in variants:
        curves, seconds = [], []
        for seed in range(seeds):
            extra = {"model": variant.model} if variant.model else {}
            ctx = context(seed, max_trials=trials, **extra)
            start = time.perf_counter()
            history = run_search(get_proposer(variant.strategy), ctx, trials, parallel=parallel, noise=noise)
            seconds.append(time.perf_counter() - start)
            curves.append(true_gains(history))
        results[variant.label] = {"curves": curves, "seconds": seconds}
        final = [c[-1] for c in curves]
        mean, spread, pace = statistics.mean(final), statistics.pstdev(final), statistics.mean(seconds)
        print(f"{variant.label:24s} best true gain {mean:.4f} ± {spread:.4f}  {pace:.1f} s/search",
              file=sys.stderr, flush=True)  # fmt: skip
    return results


def reach(curve: list[float], target: float) -> int | None:
    return next((i + 1 for i, gain in enumerate(curve) if gain >= target - 1e-12), None)


def render(
    results: dict[str, Any], command: str, seeds: int, trials: int, parallel: int, noise: float
) -> str:
    from bench.results_md import machine, table

    tpe = results.get("tpe")
    header = ["strategy", *(f"best true gain after {n}" for n in CHECKPOINTS if n <= trials)]
    header += ["vs tpe at the end", "trials to reach tpe's best (per seed)", "s per search"]
    rows = []
    for label, entry in results.items():
        curves = entry["curves"]
        row = [label]
        for n in CHECKPOINTS:
            if n <= trials:
                values = [c[n - 1] for c in curves]
                row.append(f"{statistics.mean(values):.4f} ± {statistics.pstdev(values):.4f}")
        final = statistics.mean(c[-1] for c in curves)
        if tpe:
            row.append(f"{final / statistics.mean(c[-1] for c in tpe['curves']):.2f}x")
            reached = [reach(c, t[-1]) for c, t in zip(curves, tpe["curves"], strict=True)]
            row.append(", ".join("-" if r is None else str(r) for r in reached))
        else:
            row += ["-", "-"]
        row.append(f"{statistics.mean(entry['seconds']):.1f}")
        rows.append(row)
    return "\n".join([
        f"Command: `{command}` ({datetime.date.today().isoformat()}, {machine()}; {seeds} search seeds, "
        f"{trials} trials, {parallel} in flight, observation noise {noise})",
        "",
        table(header, rows),
        "",
        "The problem: 85 sites (6 vision and 6 language layers, 6 and 7 module kinds, a projector), budget "
        "of uniform rank 8, grid 0-32; the best schedule found by hill-climbing on the true objective "
        "gains about 0.24 over uniform. \"-\": did not reach tpe's best within the trials.",
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--noise", type=float, default=0.0, help="std of the noise added to observed values")
    parser.add_argument("--strategies", default="random,tpe,perfmodel")
    parser.add_argument("--variant", action="append", default=[], help="LABEL:key=value,... (perfmodel)")
    parser.add_argument("--write", action="store_true", help="record the table in bench/RESULTS.md")
    args = parser.parse_args()
    variants = [Variant(name, name) for name in args.strategies.split(",") if name]
    variants += [parse_variant(text) for text in args.variant]
    results = run(variants, args.seeds, args.trials, args.parallel, args.noise)
    command = "python bench/search_synthetic.py " + " ".join(sys.argv[1:])
    from bench.results_md import wrap, write_section

    body = wrap(render(results, command.strip(), args.seeds, args.trials, args.parallel, args.noise))
    print(body)
    if args.write:
        write_section(f"Strategies on the synthetic problem (noise {args.noise})", body)


if __name__ == "__main__":
    main()
