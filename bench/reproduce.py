"""Reproduce a search-quality headline on this machine's base weights: the same schedules, seeds and lengths.

A stored protocol (``search_quality.py --json``) names, per search seed, each strategy's proxy-best
schedule; its confirmation runs are in the protocol's store under the base weights they were trained
on (the sha256 in every key). This script re-trains uniform and those schedules with the same
confirmation seeds, length and test split on the base this machine builds (``RANKTUNE_CACHE_DIR``
decides where: another directory rebuilds it, as a fresh clone does), stores them in the same store
(under the new base's sha256, so nothing mixes) and compares, base against base: uniform's test
accuracy, the schedule's, and the paired gain with its 95% interval (``search.paired``). The headline
is reproduced when the new paired gain lies inside the stored interval and the stored gain inside the
new one.

    .venv/bin/python bench/reproduce.py --task fashion --strategy perfmodel \\
        --protocol bench/runs/search_quality_fashion.json --store bench/runs/search_quality_fashion.jsonl
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results_md import command_line, machine, publish, table, wrap
from bench.search_quality_common import BUDGET_RANK, TASKS, Config, make_space
from bench.search_quality_runs import RunStore

SEED_OFFSET = 1000  # search.confirm.SEED_OFFSET: confirmation seeds start here (checked in main)


def winners(protocol: dict[str, Any], task: str, strategy: str) -> dict[int, tuple[int, ...]]:
    """Search seed → the ranks the strategy's search confirmed (a ``+recheck`` search ranks by the mean of
    a schedule's proxy runs), else its proxy-best (ties: the earlier trial), as the protocol chose."""
    figures = protocol["tasks"][task]["strategies"].get(strategy)
    if figures is None:
        raise SystemExit(f"--strategy: {strategy!r} is not in the protocol's results for {task}")
    found = {}
    for seed, trials in figures["trials"].items():
        by_number = {t["number"]: t for t in trials}
        confirmed = [n for n in figures.get("confirms", {}).get(seed, []) if n != 0 and n in by_number]
        best = (
            by_number[confirmed[0]]
            if confirmed
            else max(trials, key=lambda t: (t["objective"], -t["number"]))
        )
        found[int(seed)] = tuple(best["ranks"])
    return found


def stored_bases(store: RunStore, label: str) -> Counter[str]:
    """Base sha256 → how many test-split (confirmation) runs of ``label`` the store holds on it."""
    bases: Counter[str] = Counter()
    for key in store.records:
        fields = json.loads(key)
        if fields.get("bench") == label and fields.get("split") == "test":
            bases[fields["base"]] += 1
    return bases


def pairs(values: dict[int, Any], uniform: dict[int, Any]) -> dict[str, Any]:
    from ranktune.search.paired import paired_gain

    found = paired_gain(values, uniform)
    if found is None:
        raise SystemExit("no pair of runs with outcomes: the store's runs lack per-example outcomes")
    return found.to_json()


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from bench.search_quality_bench import Runner
    from ranktune.search.confirm import SEED_OFFSET as CONFIRM_OFFSET
    from ranktune.search.paired import decode_outcomes
    from ranktune.search.schedule import RankSchedule
    from ranktune.trainer.fingerprint import base_weights_sha256
    from ranktune.trainer.tasks.registry import load_task

    assert CONFIRM_OFFSET == SEED_OFFSET
    torch.set_num_threads(1)
    protocol = json.loads(args.protocol.read_text())
    stored = protocol["config"]
    config = Config(steps=stored["steps"], confirm_steps=stored["confirm_steps"], lr=stored["lr"],
                    batch_size=stored["batch_size"],
                    budget_rank=stored.get("budget_rank", BUDGET_RANK))  # fmt: skip
    model, task_name = TASKS[args.task]
    task = load_task(task_name, model)
    label = f"{model}+{task_name}"
    store = RunStore(args.store)
    fresh = RunStore(args.fresh_store) if args.fresh_store else store
    base = base_weights_sha256(model)
    ranked = [b for b, _ in stored_bases(store, label).most_common()]
    # With --fresh-store this base's own stored runs, trained again; else the other base with most runs.
    others = [base] if args.fresh_store and base in ranked else [b for b in ranked if b != base]
    reference = args.reference_base or (others[0] if others else None)
    if reference is None:
        raise SystemExit(f"--store: {args.store} holds no run of {label} on other base weights than "
                         f"{base} (give --fresh-store to train this base's runs again)")  # fmt: skip
    space = make_space(model, task_name, config.budget_rank)
    runner = Runner(task, config, label, fresh, base=base, data=task.data_sha256())
    old = Runner(task, config, label, store, base=reference, data=task.data_sha256())
    chosen = winners(protocol, args.task, args.strategy)
    seeds = sorted(chosen)[: args.search_seeds]
    steps = config.confirm_steps
    figures: dict[str, dict[str, Any]] = {"reference": {}, "this base": {}}
    for name, who in (("reference", old), ("this base", runner)):
        runs: dict[str, dict[int, Any]] = {"uniform": {}, "schedule": {}}
        for seed in seeds:
            for number in range(args.confirm_seeds):
                confirm_seed = SEED_OFFSET + seed + number
                for kind, ranks in (("uniform", space.uniform().ranks), ("schedule", chosen[seed])):
                    key = who.lora_key(ranks, confirm_seed, steps, "test")
                    if who is old and who.store.get(key) is None:
                        raise SystemExit(f"no reference {kind} run (seed {confirm_seed}) in the store")
                    schedule = RankSchedule(space.sites, ranks, space.alpha)
                    value = who.metric(schedule, confirm_seed, steps, "test")
                    text = (who.store.get(key) or {}).get("extra", {}).get("outcomes")
                    runs[kind][seed * 1000 + number] = (value, decode_outcomes(text) if text else None)
                    print(f"{name} {kind} seed {confirm_seed}: {value:.4f}", file=sys.stderr)
        figures[name] = {
            "uniform": statistics.mean(v for v, _ in runs["uniform"].values()),
            "schedule": statistics.mean(v for v, _ in runs["schedule"].values()),
            "paired": pairs(runs["schedule"], runs["uniform"]),
            "runs": len(runs["uniform"]) + len(runs["schedule"]),
            "values": {k: [v for _, (v, _) in sorted(r.items())] for k, r in runs.items()},
        }
    old_ci, new_ci = figures["reference"]["paired"]["ci"], figures["this base"]["paired"]["ci"]
    old_gain, new_gain = figures["reference"]["paired"]["gain"], figures["this base"]["paired"]["gain"]
    reproduced = old_ci[0] <= new_gain <= old_ci[1] and new_ci[0] <= old_gain <= new_ci[1]
    identical = figures["this base"]["values"] == figures["reference"]["values"]
    return {"task": args.task, "strategy": args.strategy, "steps": steps, "search_seeds": seeds,
            "budget_rank": config.budget_rank,
            "bit_for_bit": identical if reference == base else None,
            "confirm_seeds": args.confirm_seeds, "bases": {"reference": reference, "this base": base},
            "data": task.data_sha256(), "figures": figures, "reproduced": reproduced,
            "wall_s": runner.seconds}  # fmt: skip


def render(result: dict[str, Any], command: str) -> str:
    def pct(value: float) -> str:
        return f"{100 * value:.2f}"

    rows = []
    for name in ("reference", "this base"):
        f = result["figures"][name]
        low, high = f["paired"]["ci"]
        rows.append([f"{name} (`{result['bases'][name][:12]}`)", pct(f["uniform"]), pct(f["schedule"]),
                     f"{100 * f['paired']['gain']:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]",
                     f["paired"]["verdict"], str(f["runs"])])  # fmt: skip
    verdict = "reproduced" if result["reproduced"] else "NOT reproduced"
    if result.get("bit_for_bit") is not None:  # the same base trained again
        verdict += "; every run bit-for-bit equal" if result["bit_for_bit"] else "; runs differ"
    return wrap("\n".join([
        f"Command: `{command}` ({datetime.date.today().isoformat()}, {machine()}, 1 torch thread)", "",
        f"Task `{result['task']}` at the budget of uniform rank {result.get('budget_rank', BUDGET_RANK)}, "
        f"the `{result['strategy']}` searches' confirmed schedules (search seeds "
        f"{', '.join(map(str, result['search_seeds']))}) and uniform, {result['confirm_seeds']} confirmation "
        f"seed(s) each, {result['steps']} steps, test split (data sha256 `{result['data'][:12]}`), trained "
        "on two base weights: the stored protocol's and the one this machine built.", "",
        table(["base weights (sha256)", "uniform (test, %)", "schedule (test, %)",
               "paired gain [95% CI] (points)", "verdict", "runs"], rows), "",
        f"Verdict: **{verdict}** (the test: each base's paired gain inside the other's interval). "
        f"Training on this base: {result['wall_s'] / 60:.0f} min of runs.",
    ]))  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument("--strategy", default="perfmodel")
    parser.add_argument("--protocol", type=Path, required=True, help="the protocol's --json output")
    parser.add_argument("--store", type=Path, required=True, help="the protocol's --store")
    parser.add_argument("--search-seeds", type=int, default=3, help="how many of the protocol's searches")
    parser.add_argument("--confirm-seeds", type=int, default=1, help="confirmation seeds per search seed")
    parser.add_argument("--reference-base", help="sha256 of the stored base (default: the store's other one)")
    parser.add_argument(
        "--fresh-store",
        type=Path,
        help="where this base's runs go (default: --store); a new "
        "file re-trains runs the store already holds on this base (a bit-for-bit check)",
    )
    parser.add_argument("--json", type=Path, help="write the raw result here")
    parser.add_argument("--write", action="store_true", help="update this part's section of bench/RESULTS.md")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    budget = "" if result["budget_rank"] == BUDGET_RANK else f", budget rank {result['budget_rank']}"
    heading = f"Reproduction ({args.task}{budget})"
    publish(heading, render(result, command_line("reproduce.py", argv)), args.write)


if __name__ == "__main__":
    main()
