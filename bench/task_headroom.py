"""Task headroom: does a built-in task leave room for a better rank schedule?

For each task, one proxy fine-tune (same loop and settings as a search's trials: lr 1e-3, batch 32,
seed 0, val split) with no adapter at all (only the task's head, if it has one, trains), one with
uniform rank-8 LoRA on every site of the search, and one full fine-tuning (every weight trains, at the
lower learning rate of ``FULL_LR``). A task where uniform rank 8 already scores ~100% (or where
adapters add nothing over the head) cannot show one schedule beating another; the gap between uniform
rank 8 and full fine-tuning is room a better schedule may take.

    .venv/bin/python bench/task_headroom.py --write

Finished fine-tunes go to ``--store`` (JSONL, ``bench/runs/task_headroom.jsonl`` by default): a rerun
trains only what is missing, so slices (``--tasks``) can run side by side into one store, and the
table shows every stored row of the chosen length (``--no-run --write`` renders without training).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results_md import command_line, machine, publish, table, wrap
from bench.search_quality_runs import RunStore, run_key

DEFAULT_STORE = Path(__file__).resolve().parent / "runs" / "task_headroom.jsonl"

TASKS = (
    ("builtin:minilm", "builtin:minilm-topics"),
    ("builtin:minilm", "builtin:minilm-stdlib"),
    ("builtin:minilm", "builtin:minilm-tweets"),
    ("builtin:tiny-vlm", "builtin:digits-vqa"),
    ("builtin:tiny-vlm", "builtin:fashion-vqa"),
)
RANKS: tuple[int | None, ...] = (0, 8, None)  # None: full fine-tuning
FULL_LR = {"builtin:minilm": 1e-4, "builtin:tiny-vlm": 3e-4}  # a 22M/1.2M-parameter model in full


def measure(model: str, task_name: str, steps: int, rank: int | None) -> dict[str, Any]:
    from bench.search_quality_common import make_space
    from ranktune.search.schedule import RankSchedule
    from ranktune.trainer.adapters import AdapterMethod
    from ranktune.trainer.proxy import ProxySettings, proxy_finetune
    from ranktune.trainer.tasks.registry import load_task

    task = load_task(task_name, model)
    space = make_space(model, task_name)
    schedule = None if rank is None else RankSchedule(space.sites, (rank,) * len(space.sites), space.alpha)
    if rank == 0 and not task.head_modules:  # nothing would train: the untuned model as it is
        start = time.perf_counter()
        metric, trainable = task.evaluate(task.build_model(), "val"), 0
        wall = time.perf_counter() - start
    else:
        lr = FULL_LR[model] if rank is None else 1e-3
        settings = ProxySettings(steps=steps, lr=lr, batch_size=32, seed=0)
        result = proxy_finetune(task, schedule, AdapterMethod("lora"), settings, eval_split="val")
        metric, trainable, wall = result.metric, result.trainable_params, result.wall_time_s
    return {"model": model, "task": task_name, "rank": rank, "steps": steps, "val": metric,
            "trainable": trainable, "wall_s": wall}  # fmt: skip


@cache
def fingerprints(model: str, task: str) -> tuple[str, str]:
    """(base weights sha256, task data sha256): part of every key, so other bases or data never mix."""
    from ranktune.trainer.fingerprint import base_weights_sha256
    from ranktune.trainer.tasks.registry import load_task

    return base_weights_sha256(model), load_task(task, model).data_sha256()


def headroom_key(model: str, task: str, steps: int, rank: int | None) -> str:
    import torch

    base, data = fingerprints(model, task)
    return run_key(bench="task_headroom", model=model, task=task, steps=steps, rank=rank, base=base,
                   data=data, torch=torch.__version__, threads=torch.get_num_threads())  # fmt: skip


def stored_rows(store: RunStore, steps: int) -> list[dict[str, Any]]:
    """Every (task, variant) of ``TASKS`` × ``RANKS`` the store holds at ``steps``, in table order."""
    rows = []
    for model, task in TASKS:
        for rank in RANKS:
            found = store.get(headroom_key(model, task, steps, rank))
            if found is not None:
                rows.append({"model": model, "task": task, "rank": rank, "steps": steps,
                             "val": found["metric"], "trainable": found["extra"]["trainable"],
                             "wall_s": found["wall_s"]})  # fmt: skip
    return rows


def render(rows: list[dict[str, Any]], command: str) -> str:
    names = {0: "head only", None: "full fine-tuning"}
    body = [[r["task"], r["model"], names.get(r["rank"], f"uniform rank {r['rank']}"),
             f"{r['trainable']:,}", f"{100 * r['val']:.1f}", f"{r['wall_s']:.0f} s"]
            for r in rows]  # fmt: skip
    return wrap("\n".join([
        f"Command: `{command}` ({datetime.date.today().isoformat()}, {machine()}, 1 torch thread)", "",
        table(["task", "model", "adapters", "trainable params", f"val accuracy after {rows[0]['steps']} "
               "steps (%)", "wall"], body), "",
        "One proxy fine-tune each (lr 1e-3, batch 32, seed 0; full fine-tuning at lr "
        f"{', '.join(f'{v:g} on {k}' for k, v in FULL_LR.items())}). \"head only\": no adapter; MiniLM's "
        "new linear head trains, as does fashion-vqa's grown embedding table; digits-vqa has no head, so "
        "nothing trains: the untuned model is evaluated.",
    ]))  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--tasks", help="comma-separated task names (default: all built-in tasks)")
    parser.add_argument("--write", action="store_true", help="update this part's section of bench/RESULTS.md")
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help="JSONL of finished fine-tunes")
    parser.add_argument("--no-run", action="store_true", help="only render what the store holds")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    store = RunStore(args.store)
    chosen = [t for t in TASKS if args.tasks is None or t[1] in args.tasks.split(",")]
    for model, task in [] if args.no_run else chosen:
        for rank in RANKS:
            key = headroom_key(model, task, args.steps, rank)
            if store.get(key) is None:
                row = measure(model, task, args.steps, rank)
                store.put(key, row["val"], row["wall_s"], {"trainable": row["trainable"]})
                print(row, file=sys.stderr)
    rows = stored_rows(store, args.steps)
    if not rows:
        raise SystemExit(f"--store: {args.store} holds no run of {args.steps} steps")
    publish("Task headroom", render(rows, command_line("task_headroom.py", argv)), args.write)


if __name__ == "__main__":
    main()
