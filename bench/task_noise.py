"""Task noise: how large a gain can a confirmation resolve on each built-in task?

Uniform rank-8 LoRA is fine-tuned at full length with ``--seeds`` seeds (lr 1e-3, batch 32) and scored
on the test split, keeping every example's outcome. Two runs of the *same* schedule with different
seeds differ only by noise, so pairing seed ``2k`` with seed ``2k+1`` as if one were a schedule and the
other uniform gives null comparisons: their paired 95% interval (``search.paired``) is the smallest gain
a confirmation with that many seeds could tell from zero. Reported per task: test examples, the spread
of accuracy over seeds, a run's binomial standard error, and the null interval's half-width with 1 and
with all seed pairs.

Finished runs go to ``--store`` (JSONL, ``bench/runs/task_noise.jsonl`` by default; the key carries the
base weights' and the data's sha256): a rerun trains only what is missing, so tasks run as slices side
by side and ``--no-run --write`` renders every stored task.

    .venv/bin/python bench/task_noise.py --tasks builtin:fashion-vqa --write
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results_md import command_line, machine, publish, table, wrap
from bench.search_quality_runs import RunStore, run_key
from bench.task_headroom import TASKS, fingerprints

DEFAULT_STORE = Path(__file__).resolve().parent / "runs" / "task_noise.jsonl"
STEPS = {"builtin:tiny-vlm": 1000, "builtin:minilm": 600}  # full length per base model
RANK, LR, BATCH = 8, 1e-3, 32


def noise_key(model: str, task: str, steps: int, seed: int, base: str | None = None) -> str:
    """The run's key on ``base`` (default: the base weights this machine builds)."""
    import torch

    own, data = fingerprints(model, task)
    return run_key(bench="task_noise", model=model, task=task, steps=steps, seed=seed, rank=RANK, lr=LR,
                   batch_size=BATCH, base=base or own, data=data, torch=torch.__version__,
                   threads=torch.get_num_threads())  # fmt: skip


def stored_bases(store: RunStore, model: str, task: str, steps: int) -> list[str]:
    """Base sha256s the store has runs of (model, task, steps) on, this machine's first, then by count."""
    import json
    from collections import Counter

    counts = Counter(
        key["base"] for key in (json.loads(k) for k in store.records)
        if key.get("bench") == "task_noise"
        and (key["model"], key["task"], key["steps"]) == (model, task, steps)
    )  # fmt: skip
    own = fingerprints(model, task)[0]
    return sorted(counts, key=lambda b: (b != own, -counts[b]))


def train(model: str, task_name: str, steps: int, seed: int) -> tuple[float, float, dict[str, Any]]:
    from bench.search_quality_common import make_space
    from ranktune.trainer.adapters import AdapterMethod
    from ranktune.trainer.proxy import ProxySettings, proxy_finetune
    from ranktune.trainer.tasks.registry import load_task

    task = load_task(task_name, model)
    schedule = make_space(model, task_name).uniform()
    settings = ProxySettings(steps=steps, lr=LR, batch_size=BATCH, seed=seed)
    result = proxy_finetune(task, schedule, AdapterMethod("lora"), settings, eval_split="test")
    return result.metric, result.wall_time_s, {"outcomes": result.to_json()["outcomes"]}


def figures(model: str, task: str, steps: int, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The noise figures of one task from its stored runs (seed order)."""
    from ranktune.search.paired import binomial_se, decode_outcomes, paired_gain

    runs = [(r["metric"], decode_outcomes(r["extra"]["outcomes"])) for r in records]
    accuracies = [a for a, _ in runs]
    examples = len(runs[0][1])
    pairs = [(runs[i], runs[i + 1]) for i in range(0, len(runs) - 1, 2)]

    def half_width(count: int) -> float | None:
        if count == 0:
            return None
        found = paired_gain({k: p[0] for k, p in enumerate(pairs[:count])},
                            {k: p[1] for k, p in enumerate(pairs[:count])})  # fmt: skip
        if found is None or found.low is None or found.high is None:
            return None
        return (found.high - found.low) / 2

    return {"model": model, "task": task, "steps": steps, "seeds": len(runs), "examples": examples,
            "mean": statistics.mean(accuracies),
            "seed_sd": statistics.stdev(accuracies) if len(runs) > 1 else None,
            "binomial_se": binomial_se(statistics.mean(accuracies), examples),
            "half_width_1": half_width(1), "half_width_all": half_width(len(pairs)), "pairs": len(pairs),
            "wall_s": statistics.mean(r["wall_s"] for r in records)}  # fmt: skip


def render(rows: list[dict[str, Any]], command: str) -> str:
    def pts(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.2f}"

    body = [[r["task"], f"`{r['base'][:8]}`", str(r["steps"]), f"{r['examples']:,}", str(r["seeds"]),
             pts(r["mean"]),
             pts(r["seed_sd"]), pts(r["binomial_se"]), pts(r["half_width_1"]),
             f"{pts(r['half_width_all'])} ({r['pairs']})", f"{r['wall_s']:.0f} s"] for r in rows]  # fmt: skip
    return wrap("\n".join([
        f"Command: `{command}` ({datetime.date.today().isoformat()}, {machine()}, 1 torch thread)", "",
        table(["task", "base weights (sha256)", "steps", "test examples", "seeds",
               "uniform rank 8 test accuracy (%)", "sd over seeds (points)",
               "binomial s.e. of a run (points)",
               "null 95% half-width, 1 seed pair (points)", "same, all pairs (pairs)", "wall per run"],
              body), "",
        "Uniform rank-8 LoRA (lr 1e-3, batch 32) at full length, scored on the test split. A null pair is "
        "two seeds of the same schedule compared as a confirmation would compare a schedule with uniform "
        "(`search.paired`): the half-width is the smallest gain such a confirmation tells from zero.",
    ]))  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tasks", help="comma-separated task names (default: all built-in tasks)")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument(
        "--steps", type=int, help="one length for every task (default: full length per model)"
    )
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help="JSONL of finished runs")
    parser.add_argument("--no-run", action="store_true", help="only render what the store holds")
    parser.add_argument("--write", action="store_true", help="update this part's section of bench/RESULTS.md")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    store = RunStore(args.store)
    chosen = [t for t in TASKS if args.tasks is None or t[1] in args.tasks.split(",")]

    def steps(model: str) -> int:
        return args.steps or STEPS[model]

    for model, task in [] if args.no_run else chosen:
        for seed in range(args.seeds):
            key = noise_key(model, task, steps(model), seed)
            if store.get(key) is None:
                metric, wall, extra = train(model, task, steps(model), seed)
                store.put(key, metric, wall, extra)
                print(f"{task} seed {seed}: {metric:.4f} in {wall:.0f} s", file=sys.stderr)
    rows = []
    for model, task in chosen:  # one base per task: this machine's when it has runs, else the stored one
        for base in stored_bases(store, model, task, steps(model))[:1]:
            records = []
            for seed in range(args.seeds):
                found = store.get(noise_key(model, task, steps(model), seed, base))
                if found is None:
                    break
                records.append(found)
            if records:
                rows.append({**figures(model, task, steps(model), records), "base": base})
    if not rows:
        raise SystemExit(f"--store: {args.store} holds no finished run of the chosen tasks")
    publish("Task noise", render(rows, command_line("task_noise.py", argv)), args.write)


if __name__ == "__main__":
    main()
