"""Adapter methods on an image-classification transfer task: LoRA vs DMLoRA vs full fine-tuning.

DMLoRA's own setting (ECCV 2024): a pretrained vision transformer fine-tuned to a new classification
task. ``builtin:fashion-cls`` is one: the tiny VLM's CLIP vision tower (``builtin:tiny-vlm-vision``),
pretrained on handwritten digits only, with a new linear head, learns Fashion-MNIST's ten classes. Per
seed, with the same data order and head initialisation for every method:

- ``head``: no adapter, only the head trains (a linear probe of the pretrained tower);
- ``lora``: uniform rank-8 LoRA on the tower's 24 linear layers, plus the head;
- ``dmlora``: DMLoRA at the same parameter count (rank 8 per site as 4 branches of rank 2, the default
  options: gradual branch dropout, pruning to 2 branches, a learned per-layer scale), plus the head;
- ``full``: every weight of the tower and the head (at the lower learning rate ``FULL_LR``).

Each run is scored on the whole 10,000-image test file, keeping every example's outcome, so methods
are compared paired by seed (``search.paired``). DMLoRA's claim is robustness, so the spread over seeds
(sd, min-max) is reported next to the mean.

    .venv/bin/python bench/adapter_methods.py --write

Finished runs go to ``--store`` (JSONL, ``bench/runs/adapter_methods.jsonl`` by default; the key carries
the base weights' and the data's sha256): a rerun trains only what is missing, so ``--methods`` slices
can run side by side into one store, and ``--no-run --write`` renders what the store holds.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results_md import command_line, machine, publish, table, wrap
from bench.search_quality_runs import RunStore, run_key

DEFAULT_STORE = Path(__file__).resolve().parent / "runs" / "adapter_methods.jsonl"
MODEL, TASK = "builtin:tiny-vlm-vision", "builtin:fashion-cls"
METHODS = ("head", "lora", "dmlora", "full")
NAMES = {"head": "head only", "lora": "LoRA, uniform rank 8", "dmlora": "DMLoRA, rank 8 (4 branches of 2)",
         "full": "full fine-tuning"}  # fmt: skip
RANK, LR, FULL_LR, BATCH = 8, 1e-3, 3e-4, 32
HEADING = "Adapter methods on fashion-cls: LoRA vs DMLoRA vs full fine-tuning"


@cache
def encoded_task(model: str, task_name: str) -> Any:
    """The task with every split's images encoded already, so a run's wall time is training and scoring."""
    from ranktune.trainer.tasks.base import SPLITS
    from ranktune.trainer.tasks.registry import load_task

    task = load_task(task_name, model)
    for split in SPLITS:
        next(task.batches(split, 1, seed=0))
    return task


def measure(method: str, steps: int, seed: int, model: str = MODEL, task_name: str = TASK) -> dict[str, Any]:
    """One fine-tune of ``method``, scored on the test split (with every example's outcome)."""
    from bench.search_quality_common import BUDGET_RANK, make_space
    from ranktune.search.paired import encode_outcomes
    from ranktune.search.schedule import RankSchedule
    from ranktune.trainer.adapters import AdapterMethod
    from ranktune.trainer.adapters.inject import effective_schedule
    from ranktune.trainer.proxy import ProxySettings, proxy_finetune

    assert BUDGET_RANK == RANK, "the uniform schedule of the search's space is this bench's LoRA"
    task = encoded_task(model, task_name)
    space = make_space(model, task_name)  # the sites and alpha rule a search's uniform baseline has
    schedules = {"head": RankSchedule(space.sites, (0,) * len(space.sites), space.alpha), "full": None}
    schedule = schedules[method] if method in schedules else space.uniform()
    settings = ProxySettings(steps=steps, lr=FULL_LR if method == "full" else LR, batch_size=BATCH, seed=seed)
    kind = "dmlora" if method == "dmlora" else "lora"
    result = proxy_finetune(task, schedule, AdapterMethod(kind), settings, eval_split="test")
    assert result.outcomes is not None and result.model is not None
    exported = effective_schedule(result.model, schedule).parameter_count if schedule is not None else None
    return {"method": method, "seed": seed, "steps": steps, "test": result.metric,
            "wall_s": result.wall_time_s, "trainable": result.trainable_params,
            "adapter": result.adapter_params, "exported": exported,
            "outcomes": encode_outcomes(result.outcomes)}  # fmt: skip


def method_key(method: str, steps: int, seed: int) -> str:
    import torch

    from bench.task_headroom import fingerprints

    base, data = fingerprints(MODEL, TASK)
    return run_key(bench="adapter_methods", model=MODEL, task=TASK, method=method, rank=RANK,
                   steps=steps, seed=seed, lr=FULL_LR if method == "full" else LR, batch_size=BATCH,
                   base=base, data=data, torch=torch.__version__,
                   threads=torch.get_num_threads())  # fmt: skip


def stored_runs(store: RunStore, methods: Sequence[str], steps: int, seeds: int) -> list[dict[str, Any]]:
    runs = []
    for method in methods:
        for seed in range(seeds):
            found = store.get(method_key(method, steps, seed))
            if found is not None:
                runs.append({"method": method, "seed": seed, "steps": steps, "test": found["metric"],
                             "wall_s": found["wall_s"], **found["extra"]})  # fmt: skip
    return runs


def render(runs: list[dict[str, Any]], command: str) -> str:
    """Per method: accuracy over seeds (mean, sd, min-max), parameters and wall time; then each method
    against LoRA, paired by seed and example."""
    from ranktune.search.paired import binomial_se, decode_outcomes, paired_gain

    by_method = {m: [r for r in runs if r["method"] == m] for m in METHODS}
    by_method = {m: chosen for m, chosen in by_method.items() if chosen}
    rows = []
    for method, chosen in by_method.items():
        accuracies = [100 * r["test"] for r in chosen]
        sd = f"{statistics.stdev(accuracies):.2f}" if len(accuracies) > 1 else "-"
        exported = "-" if chosen[0]["exported"] is None else f"{chosen[0]['exported']:,}"
        rows.append([NAMES[method], f"{chosen[0]['trainable']:,}", exported,
                     str(len(chosen)), f"{statistics.mean(accuracies):.2f}", sd,
                     f"{min(accuracies):.2f} – {max(accuracies):.2f}",
                     f"{max(accuracies) - min(accuracies):.2f}",
                     f"{statistics.mean(r['wall_s'] for r in chosen):.0f} s"])  # fmt: skip
    examples = len(decode_outcomes(runs[0]["outcomes"]))
    mean = statistics.mean(r["test"] for r in runs)
    lines = [
        f"Command: `{command}` ({datetime.date.today().isoformat()}, {machine()}, 1 torch thread)", "",
        table(["method", "trainable params (with the head)", "adapter params written", "seeds",
               f"test accuracy after {runs[0]['steps']} steps (%)", "sd over seeds (points)",
               "min – max (%)", "spread (points)", "wall per run"], rows), "",
    ]  # fmt: skip
    comparisons = []
    base = {r["seed"]: (r["test"], decode_outcomes(r["outcomes"])) for r in by_method.get("lora", [])}
    for method, chosen in by_method.items():
        if method == "lora" or not base:
            continue
        found = paired_gain({r["seed"]: (r["test"], decode_outcomes(r["outcomes"])) for r in chosen}, base)
        if found is None:
            continue
        interval = f"[{100 * found.low:+.2f}, {100 * found.high:+.2f}]" if found.low is not None else "(none)"
        comparisons.append([f"{NAMES[method]} − LoRA", f"{100 * found.gain:+.2f}", interval,
                            str(found.seeds), found.verdict])  # fmt: skip
    if comparisons:
        lines += [table(["paired by seed and example", "gain (points)", "95% interval", "seeds", "verdict"],
                        comparisons), ""]  # fmt: skip
    last_seed = max(r["seed"] for r in runs)
    lines.append(
        f"{TASK} on {MODEL} (the pretrained CLIP tower of builtin:tiny-vlm, digits only), {examples:,} "
        f"test images (a run's binomial s.e. is {100 * binomial_se(mean, examples):.2f} points). Every "
        "method trains the same new linear head (970 parameters) from the same initialisation; lr "
        f"{LR:g} ({FULL_LR:g} for full fine-tuning), batch {BATCH}, warmup and cosine decay, seeds "
        f"0-{last_seed} (a seed sets the data order and the adapters' initialisation). DMLoRA has "
        "LoRA's parameter count while it trains; it prunes branches, so it writes fewer."
    )  # fmt: skip
    return wrap("\n".join(lines))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated: {', '.join(METHODS)}")
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help="JSONL of finished runs")
    parser.add_argument("--no-run", action="store_true", help="only render what the store holds")
    parser.add_argument("--write", action="store_true", help="update this part's section of bench/RESULTS.md")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"--methods: {unknown[0]!r} is not one of {', '.join(METHODS)}")
    import torch

    torch.set_num_threads(1)
    store = RunStore(args.store)
    for seed in [] if args.no_run else range(args.seeds):  # seed-major: every method gets seed 0 first
        for method in methods:
            key = method_key(method, args.steps, seed)
            if store.get(key) is None:
                run = measure(method, args.steps, seed)
                extra = {k: run[k] for k in ("trainable", "adapter", "exported", "outcomes")}
                store.put(key, run["test"], run["wall_s"], extra)
                print(f"{method} seed {seed}: {run['test']:.4f} in {run['wall_s']:.0f} s", file=sys.stderr)
    runs = stored_runs(store, methods, args.steps, args.seeds)
    if not runs:
        raise SystemExit(f"--store: {args.store} holds no run of {args.steps} steps")
    text = render(runs, command_line("adapter_methods.py", argv))
    publish(HEADING, text, args.write)


if __name__ == "__main__":
    main()
