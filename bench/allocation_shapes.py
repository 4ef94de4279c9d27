"""Allocation shapes: at a tight budget, does *where* the ranks go matter, and by how much?

Hand-made schedules at the exact parameter budget of uniform rank ``--budget-rank`` LoRA, each putting
every rank on one part of the model (a tower, attention or MLP kinds, the lower or upper layers), are
fine-tuned with the same loop, seeds and data order as uniform and compared with it *paired* (same
seeds, same test examples: ``search.paired``). A shape that beats uniform by more than its interval is
room a search can take; a shape far below it is a trap a search must avoid. The shapes go through the
search's own projection (``HierarchicalSpace.schedule_for_weights``), so every one lands within the
97-100% budget band as a search's proposals do.

    .venv/bin/python bench/allocation_shapes.py --task fashion --budget-rank 2 --write

Finished fine-tunes go to ``--store`` (JSONL, resumable: a rerun trains only what is missing; every
key carries the base weights' and data's sha256).
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results_md import command_line, machine, publish, table, wrap
from bench.search_quality_runs import RunStore, in_pool, run_key

DEFAULT_STORE = Path(__file__).resolve().parent / "runs" / "allocation_shapes.jsonl"
ATTENTION = ("q", "k", "v", "o")

Predicate = Callable[[Any, int], bool]  # (site, how many layers its tower has) -> the site is on the shape
SHAPES: dict[str, Predicate | None] = {  # None: uniform
    "uniform": None,
    "language": lambda s, _: s.tower == "language",
    "vision+projector": lambda s, _: s.tower in ("vision", "projector"),
    "attention": lambda s, _: s.kind in ATTENTION,  # q, k, v, o of every tower
    "mlp": lambda s, _: s.kind not in ATTENTION,
    "language-attention": lambda s, _: s.tower == "language" and s.kind in ATTENTION,
    "language-mlp": lambda s, _: s.tower == "language" and s.kind not in ATTENTION,
    # the upper or lower half of each tower's layers (tiny VLM: 2 of 4, MiniLM: 3 of 6), and the projector
    "upper-layers": lambda s, depth: s.layer is None or 2 * s.layer >= depth,
    "lower-layers": lambda s, depth: s.layer is None or 2 * s.layer < depth,
}


def on_shape(sites: Sequence[Any], predicate: Predicate) -> list[bool]:
    """Per site, whether ``predicate`` picks it (given the depth of the site's tower)."""
    depth: dict[str, int] = {}
    for site in sites:
        if site.layer is not None:
            depth[site.tower] = max(depth.get(site.tower, 0), site.layer + 1)
    return [predicate(site, depth.get(site.tower, 0)) for site in sites]


def shape_schedule(space: Any, predicate: Predicate | None) -> Any:
    """Uniform, or every rank on the sites ``predicate`` picks, at the space's budget."""
    import numpy as np

    if predicate is None:
        return space.uniform()
    return space.schedule_for_weights(np.asarray(on_shape(space.sites, predicate), dtype=float))


def only_on_its_part(schedule: Any, predicate: Predicate | None) -> bool:
    """Whether every rank is on the shape's part: a part that cannot take the budget within the grid's
    97-100% band is blended towards uniform by the projection (a tilt towards the part instead)."""
    if predicate is None:
        return True
    picked = on_shape(schedule.sites, predicate)
    return not any(r for on, r in zip(picked, schedule.ranks, strict=True) if not on)


def shape_key(label: str, ranks: Sequence[int], seed: int, steps: int, split: str, lr: float) -> str:
    import torch

    from bench.search_quality_common import TASKS
    from bench.task_headroom import fingerprints

    base, data = fingerprints(*TASKS[label])  # threads: train_job trains on one thread
    return run_key(bench=f"{TASKS[label][0]}+{TASKS[label][1]}", method="lora", ranks=list(ranks),
                   seed=seed, steps=steps, split=split, lr=lr, batch_size=32, base=base, data=data,
                   torch=torch.__version__, threads=1)  # fmt: skip


def train_job(label: str, ranks: tuple[int, ...], seed: int, steps: int, split: str, lr: float,
              store_path: Path, budget_rank: int) -> None:  # fmt: skip
    """One fine-tune into the store (a process of the pool: one torch thread)."""
    import torch

    torch.set_num_threads(1)
    from bench.search_quality_common import TASKS, make_space
    from ranktune.search.schedule import RankSchedule
    from ranktune.trainer.adapters import AdapterMethod
    from ranktune.trainer.proxy import ProxySettings, proxy_finetune
    from ranktune.trainer.tasks.registry import load_task

    store = RunStore(store_path)
    key = shape_key(label, ranks, seed, steps, split, lr)
    if store.get(key) is not None:
        return
    model, task_name = TASKS[label]
    space = make_space(model, task_name, budget_rank)
    schedule = RankSchedule(space.sites, ranks, space.alpha)
    settings = ProxySettings(steps=steps, lr=lr, batch_size=32, seed=seed)
    result = proxy_finetune(load_task(task_name, model), schedule, AdapterMethod("lora"), settings,
                            eval_split=split)  # fmt: skip
    outcomes = result.to_json()["outcomes"]
    store.put(key, result.metric, result.wall_time_s, {"outcomes": outcomes} if outcomes else {})


class _Pool:  # what ``in_pool`` needs of a bench: a name, a config, the store, jobs, threads, a bar
    def __init__(self, label: str, store: RunStore, jobs: int, progress: bool) -> None:
        self.name, self.config, self.store, self.jobs, self.threads = label, None, store, jobs, 1
        self.progress = progress

    def bar(self, desc: str, total: int) -> Any:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, disable=not self.progress)


def _job(label: str, _config: Any, ranks: tuple[int, ...], seed: int, steps: int, split: str, lr: float,
         budget_rank: int, store_path: Path, _threads: int) -> None:  # fmt: skip
    train_job(label, ranks, seed, steps, split, lr, store_path, budget_rank)


def measure(label: str, budget_rank: int, shapes: Sequence[str], seeds: Sequence[int], steps: int,
            split: str, lr: float, store: RunStore, jobs: int,
            progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Train what the store lacks, then each shape's figures and its paired gain over uniform."""
    from bench.search_quality_common import TASKS, make_space
    from ranktune.search.paired import decode_outcomes, paired_gain

    space = make_space(*TASKS[label], budget_rank)
    schedules = {name: shape_schedule(space, SHAPES[name]) for name in ("uniform", *shapes)}
    missing = [(_job, (s.ranks, seed, steps, split, lr, budget_rank)) for s in schedules.values()
               for seed in seeds
               if store.get(shape_key(label, s.ranks, seed, steps, split, lr)) is None]  # fmt: skip
    if missing:
        in_pool(_Pool(label, store, jobs, progress), f"{label} shapes", missing)

    def runs(schedule: Any) -> dict[int, tuple[float, Any]]:
        found = {seed: store.get(shape_key(label, schedule.ranks, seed, steps, split, lr)) for seed in seeds}
        return {seed: (r["metric"], decode_outcomes(r["extra"]["outcomes"]) if r["extra"].get("outcomes")
                       else None) for seed, r in found.items() if r is not None}  # fmt: skip

    uniform = runs(schedules["uniform"])
    rows = []
    for name, schedule in schedules.items():
        mine = runs(schedule)
        gain = paired_gain(mine, uniform)
        rows.append({"shape": name, "ranks": list(schedule.ranks), "params": schedule.parameter_count,
                     "only_on_part": only_on_its_part(schedule, SHAPES[name]),
                     "metrics": [mine[s][0] for s in sorted(mine)],
                     "gain": None if gain is None or name == "uniform" else gain.to_json()})  # fmt: skip
    return {"task": label, "model": TASKS[label][0], "task_name": TASKS[label][1], "budget_rank": budget_rank,
            "budget_params": space.budget.params, "steps": steps, "split": split, "lr": lr,
            "seeds": list(seeds), "rows": rows}  # fmt: skip


def render(results: dict[str, Any], command: str) -> str:
    from bench.search_quality_common import grid_for

    def ci(gain: dict[str, Any] | None) -> str:
        if gain is None or gain["ci"] is None:
            return "-"
        low, high = gain["ci"]
        return f"{100 * gain['gain']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"

    def name(r: dict[str, Any]) -> str:
        return r["shape"] if r.get("only_on_part", True) else f"{r['shape']} (tilted: blended)"

    body = [[name(r), f"{r['params']:,}", f"{100 * sum(r['metrics']) / len(r['metrics']):.1f}"
             if r["metrics"] else "-", " ".join(f"{100 * m:.1f}" for m in r["metrics"]), ci(r["gain"]),
             r["gain"]["verdict"] if r["gain"] else "-"] for r in results["rows"]]  # fmt: skip
    r = results
    return wrap("\n".join([
        f"Command: `{command}` ({datetime.date.today().isoformat()}, {machine()}, 1 torch thread per "
        "run)", "",
        f"### {r['task']}: `{r['model']}` + `{r['task_name']}`, budget {r['budget_params']:,} params "
        f"(uniform rank {r['budget_rank']}), {r['steps']} steps, {r['split']} split", "",
        table(["shape (every rank on)", "params", "accuracy (%)", "per seed (%)",
               "paired gain over uniform [95% CI] (points)", "verdict"], body), "",
        f"Seeds {', '.join(map(str, r['seeds']))} (a seed sets the data order and the adapters' "
        f"initialisation, the same for every shape); lr {r['lr']:g}, batch 32, warmup and cosine decay. "
        "Each shape goes through the search's projection onto the grid "
        f"{list(grid_for(r['budget_rank']))} within 97-100% of the budget; a part that cannot take the "
        "whole budget within that band on the grid is blended towards uniform by the projection (marked "
        "tilted).",
    ]))  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    from bench.search_quality_common import TASKS

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--task", default="fashion", choices=sorted(TASKS))
    parser.add_argument("--budget-rank", type=int, default=2)
    parser.add_argument("--shapes", help="comma-separated shape names (default: all)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated (default 0,1,2)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--split", default="test", choices=("val", "test"))
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help="JSONL of finished fine-tunes")
    parser.add_argument("--write", action="store_true", help="update this part's section of bench/RESULTS.md")
    args = parser.parse_args(argv)
    shapes = [s for s in SHAPES if s != "uniform"] if args.shapes is None else args.shapes.split(",")
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        raise SystemExit(f"--shapes: unknown {', '.join(unknown)}; choose from {', '.join(SHAPES)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    results = measure(args.task, args.budget_rank, shapes, seeds, args.steps, args.split, args.lr,
                      RunStore(args.store), args.jobs)  # fmt: skip
    heading = f"Allocation shapes ({args.task}, budget rank {args.budget_rank}, {args.steps} steps)"
    publish(heading, render(results, command_line("allocation_shapes.py", argv)), args.write)


if __name__ == "__main__":
    main()
