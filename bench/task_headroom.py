"""Task headroom: does a built-in task leave room for a better rank schedule?

For each task, one proxy fine-tune (same loop and settings as a search's trials: lr 1e-3, batch 32,
seed 0, val split) with no adapter at all (only the task's head, if it has one, trains) and one with
uniform rank-8 LoRA on every site of the search. A task where uniform rank 8 already scores ~100% (or
where adapters add nothing over the head) cannot show one schedule beating another.

    .venv/bin/python bench/task_headroom.py --write
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results_md import machine, table, wrap, write_section

TASKS = (
    ("builtin:minilm", "builtin:minilm-topics"),
    ("builtin:minilm", "builtin:minilm-stdlib"),
    ("builtin:tiny-vlm", "builtin:digits-vqa"),
)
RANKS = (0, 8)


def measure(model: str, task_name: str, steps: int, rank: int) -> dict[str, Any]:
    from bench.search_quality_common import make_space
    from ranktune.search.schedule import RankSchedule
    from ranktune.trainer.adapters import AdapterMethod
    from ranktune.trainer.proxy import ProxySettings, proxy_finetune
    from ranktune.trainer.tasks.registry import load_task

    task = load_task(task_name, model)
    space = make_space(model, task_name)
    schedule = RankSchedule(space.sites, (rank,) * len(space.sites), space.alpha)
    if rank == 0 and not task.head_modules:  # nothing would train: the untuned model as it is
        start = time.perf_counter()
        metric, trainable = task.evaluate(task.build_model(), "val"), 0
        wall = time.perf_counter() - start
    else:
        settings = ProxySettings(steps=steps, lr=1e-3, batch_size=32, seed=0)
        result = proxy_finetune(task, schedule, AdapterMethod("lora"), settings, eval_split="val")
        metric, trainable, wall = result.metric, result.trainable_params, result.wall_time_s
    return {"model": model, "task": task_name, "rank": rank, "steps": steps, "val": metric,
            "trainable": trainable, "wall_s": wall}  # fmt: skip


def render(rows: list[dict[str, Any]], command: str) -> str:
    body = [[r["task"], r["model"], "head only" if r["rank"] == 0 else f"uniform rank {r['rank']}",
             f"{r['trainable']:,}", f"{100 * r['val']:.1f}", f"{r['wall_s']:.0f} s"]
            for r in rows]  # fmt: skip
    return wrap("\n".join([
        f"Command: `{command}` ({datetime.date.today().isoformat()}, {machine()}, 1 torch thread)", "",
        table(["task", "model", "adapters", "trainable params", f"val accuracy after {rows[0]['steps']} "
               "steps (%)", "wall"], body), "",
        "One proxy fine-tune each (lr 1e-3, batch 32, seed 0). \"head only\": no adapter; MiniLM's new "
        "linear head trains, tiny-vlm has no head, so nothing trains: the untuned model is evaluated.",
    ]))  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--tasks", help="comma-separated task names (default: all built-in tasks)")
    parser.add_argument("--write", action="store_true", help="update this part's section of bench/RESULTS.md")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    chosen = [t for t in TASKS if args.tasks is None or t[1] in args.tasks.split(",")]
    rows = []
    for model, task in chosen:
        for rank in RANKS:
            rows.append(measure(model, task, args.steps, rank))
            print(rows[-1], file=sys.stderr)
    command = shlex.join(
        [".venv/bin/python", "bench/task_headroom.py", *(sys.argv[1:] if argv is None else argv)]
    )
    text = render(rows, command)
    print(text)
    if args.write:
        write_section("Task headroom", text)


if __name__ == "__main__":
    main()
