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

Each set of tasks has its own RESULTS.md section ("Search quality (tiny-vlm)"), so a run on one task
leaves the other's figures as they are.

The issue's protocol (tiny-vlm about 5 h of 2 cores, MiniLM about 40 core-hours):
  .venv/bin/python bench/search_quality.py --jobs 2 --store F --write
The quick preset:  .venv/bin/python bench/search_quality.py --quick --write
Model speed:  .venv/bin/python bench/search_quality.py --model-speed --write
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.search_quality_runs import RunStore, in_pool, run_key, search_job, train_job
from search.confirm import SEED_OFFSET, ConfirmRun, plan, summarize
from search.grid import RankGrid
from search.perfmodel import spearman
from search.schedule import RankSchedule
from search.space import HierarchicalSpace
from search.strategies import SearchContext, TrialRecord, get_proposer, propose_next

TASKS = {"tiny-vlm": ("builtin:tiny-vlm", "builtin:digits-vqa"),
         "minilm": ("builtin:minilm", "builtin:minilm-stdlib")}  # fmt: skip
STRATEGIES = ("uniform", "random", "tpe", "perfmodel")
GRID = (0, 2, 4, 8, 16, 32)
BUDGET_RANK = 8
ADALORA_INIT_R = 12
HYDRA_GAIN = 4.7  # points over uniform that HyDRA reports: the goal


@dataclass(frozen=True)
class Config:
    tasks: tuple[str, ...] = ("tiny-vlm", "minilm")
    strategies: tuple[str, ...] = STRATEGIES
    trials: int = 32
    seeds: int = 3
    steps: int = 200
    confirm_steps: int = 1000
    confirm_seeds: int = 3
    top_k: int = 3
    rank_schedules: int = 20  # more proxy-tried schedules run at full length (1 seed), for the correlation
    adalora: bool = True
    lr: float = 1e-3
    batch_size: int = 32
    device: str = "cpu"


FULL = Config()  # the protocol
QUICK = Config(tasks=("tiny-vlm",), trials=12, seeds=1, confirm_steps=600, confirm_seeds=2, top_k=1,
               rank_schedules=4)  # fmt: skip


@dataclass
class Runner:
    """One task's fine-tunes, remembered in a ``RunStore``: on CPU a run is bit-for-bit repeatable for
    the same inputs, so a schedule already trained with the same seed, length and split (trial 0 of
    every strategy of one seed, the first TPE trials perfmodel shares with tpe, anything a stopped run
    of the bench finished) is not trained again."""

    task: Any
    config: Config
    label: str  # model + task, part of every key
    store: RunStore = field(default_factory=RunStore)
    cache: dict[tuple[RankSchedule, int, int, str], float] = field(default_factory=dict)
    runs: int = 0
    seconds: float = 0.0
    bar: Any = None  # the progress bar of the current loop: it shows the step of the run in progress
    _used: set[str] = field(default_factory=set)

    def key(self, **what: Any) -> str:
        import torch

        c = self.config
        return run_key(bench=self.label, lr=c.lr, batch_size=c.batch_size, device=c.device,
                       torch=torch.__version__, threads=torch.get_num_threads(), **what)  # fmt: skip

    def lora_key(self, ranks: tuple[int, ...], seed: int, steps: int, split: str) -> str:
        return self.key(method="lora", ranks=list(ranks), seed=seed, steps=steps, split=split)

    def recall(self, key: str, train: Callable[[], tuple[float, float, dict[str, Any]]]) -> dict[str, Any]:
        """The stored record of ``key``, trained (``train`` gives metric, seconds, extra) if missing."""
        record = self.store.get(key)
        if record is None:
            metric, seconds, extra = train()
            self.store.put(key, metric, seconds, extra)
            record = self.store.records[key]
        if key not in self._used:
            self._used.add(key)
            self.runs, self.seconds = self.runs + 1, self.seconds + float(record["wall_s"])
        return record

    def metric(self, schedule: RankSchedule, seed: int, steps: int, split: str) -> float:
        def train() -> tuple[float, float, dict[str, Any]]:
            from trainer.adapters import AdapterMethod
            from trainer.proxy import ProxySettings, proxy_finetune

            c = self.config
            settings = ProxySettings(steps=steps, lr=c.lr, batch_size=c.batch_size, seed=seed)
            result = proxy_finetune(self.task, schedule, AdapterMethod("lora"), settings, device=c.device,
                                    eval_split=split, on_step=self.show_step)  # fmt: skip
            return result.metric, result.wall_time_s, {}

        value = float(self.recall(self.lora_key(schedule.ranks, seed, steps, split), train)["metric"])
        self.cache[(schedule, seed, steps, split)] = value
        return value

    def show_step(self, step: int, loss: float) -> None:
        if self.bar is not None and step % 25 == 0:
            self.bar.set_postfix_str(f"step {step} loss {loss:.3f}", refresh=True)


def make_space(model: str, task: str) -> HierarchicalSpace:
    from service.planning import build_space, select_towers, sites_for_search

    sites = select_towers(sites_for_search(model, task), None)
    return build_space(sites, budget_rank=BUDGET_RANK, budget_params=None, grid=RankGrid(GRID))


def make_context(model: str, task: str, strategy: str, seed: int, config: Config,
                 space: HierarchicalSpace) -> SearchContext:  # fmt: skip
    """The proposer's context as the service builds it from a spec with default settings."""
    from service.schemas.spec import SearchCreate
    from service.searching import search_context

    spec = SearchCreate.model_validate({
        "name": f"bench-{strategy}-{seed}", "model": model, "task": task, "strategy": strategy,
        "budget": {"rank": BUDGET_RANK}, "space": {"grid": list(GRID)}, "max_trials": config.trials,
        "proxy": {"steps": config.steps, "lr": config.lr, "batch_size": config.batch_size, "seed": seed},
    })  # fmt: skip
    return search_context(spec, space)


def run_search(runner: Runner, context: SearchContext, strategy: str, bar: Any) -> list[TrialRecord]:
    """Trials one at a time; each proposer sees the succeeded trials before it (a fresh proposer per
    proposal, as the service builds one per call)."""
    history: list[TrialRecord] = []
    for number in range(context.max_trials):
        p = propose_next(get_proposer(strategy), context, number, tuple(history))
        value = runner.metric(p.schedule, p.proxy_seed, runner.config.steps, "val")
        history.append(TrialRecord(number, "succeeded", p.schedule, p.proxy_seed, value,
                                   {context.metric: value}, p.vector))  # fmt: skip
        bar.set_postfix(trial=number, val=f"{value:.3f}", best=f"{objective(proxy_best(history)):.3f}")
        bar.update(1)
    return history


def objective(trial: TrialRecord) -> float:
    return float(trial.objective if trial.objective is not None else math.nan)


def proxy_best(history: Sequence[TrialRecord]) -> TrialRecord:
    return max(history, key=lambda t: (objective(t), -t.number))


def trials_to_reach(history: Sequence[TrialRecord], target: float) -> int | None:
    """How many trials (trial 0 included) until the running best reached ``target``."""
    best = -math.inf
    for count, trial in enumerate(history, start=1):
        best = max(best, objective(trial))
        if best >= target:
            return count
    return None


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.mean(values), "std": std, "n": len(values), "values": list(values)}


def spread_pick(candidates: dict[RankSchedule, float], k: int) -> list[RankSchedule]:
    """``k`` schedules evenly spaced over the range of their proxy objectives."""
    ordered = sorted(candidates, key=lambda s: (candidates[s], s.ranks))
    if k <= 0 or not ordered:
        return []
    return [ordered[i] for i in np.unique(np.round(np.linspace(0, len(ordered) - 1, min(k, len(ordered)))))
            .astype(int)]  # fmt: skip


@dataclass
class TaskBench:
    """One task: its searches (strategy → search seed → history), then their confirmation runs."""

    name: str
    config: Config
    progress: bool = True
    store: RunStore = field(default_factory=RunStore)
    jobs: int = 1  # >1: searches and confirmation runs train in this many spawned processes
    threads: int = 1  # torch threads of each pool process
    histories: dict[str, dict[int, list[TrialRecord]]] = field(default_factory=dict)
    extra: list[RankSchedule] = field(default_factory=list)

    def __post_init__(self) -> None:
        from trainer.tasks.registry import load_task

        self.model, self.task = TASKS[self.name]
        self.runner = Runner(
            load_task(self.task, self.model), self.config, f"{self.model}+{self.task}", self.store
        )
        self.space = make_space(self.model, self.task)
        self.uniform = self.space.uniform()
        self.seeds = list(range(self.config.seeds))

    def bar(self, desc: str, total: int) -> Any:
        from tqdm import tqdm

        self.runner.bar = tqdm(
            total=total, desc=f"{self.name} {desc}", file=sys.stderr, disable=not self.progress
        )
        return self.runner.bar

    def search(self) -> None:
        """Every (strategy, search seed) search; with ``jobs`` > 1 several at once, tpe before perfmodel
        (perfmodel replays tpe's first trials from the store instead of training them again)."""
        pairs = list(itertools.product(self.config.strategies, self.seeds))
        if self.jobs > 1:
            # Known before any training: trial 0 of every search (the uniform schedule with the search's
            # seed) and every trial of a strategy that ignores history (uniform, random). Each distinct
            # run is its own job, so no two processes train the same run and none waits on a search.
            steps, known = self.config.steps, self.history_free_runs(pairs)
            in_pool(self, "known trials", [(train_job, (ranks, seed, steps, "val")) for ranks, seed in known])
            order = sorted(pairs, key=lambda p: (p[0] == "perfmodel", p[1]))
            found = in_pool(self, "searches", [(search_job, (s, seed)) for s, seed in order])
            done = dict(zip(order, found, strict=True))
        else:
            done = {p: self.run_one_search(*p) for p in pairs}
        for (strategy, seed), history in ((p, done[p]) for p in pairs):
            self.histories.setdefault(strategy, {})[seed] = history
            for t in history:  # recalled from the store: the runner counts what the figures rest on
                self.runner.metric(t.schedule, t.proxy_seed, self.config.steps, "val")

    def history_free_runs(self, pairs: Sequence[tuple[str, int]]) -> list[tuple[tuple[int, ...], int]]:
        """(ranks, proxy seed) of every proposal that needs no finished trial, each once, in order."""
        runs: dict[tuple[tuple[int, ...], int], None] = {}
        for strategy, seed in pairs:
            proposer = get_proposer(strategy)
            context = make_context(self.model, self.task, strategy, seed, self.config, self.space)
            for number in range(context.max_trials if not proposer.uses_history else 1):
                p = propose_next(proposer, context, number, ())
                runs[(p.schedule.ranks, p.proxy_seed)] = None
        return list(runs)

    def run_one_search(self, strategy: str, seed: int) -> list[TrialRecord]:
        context = make_context(self.model, self.task, strategy, seed, self.config, self.space)
        with self.bar(f"{strategy} seed {seed}", self.config.trials) as bar:
            return run_search(self.runner, context, strategy, bar)

    def proxy_trials(self) -> list[tuple[int, TrialRecord]]:
        """(search seed, trial) of every strategy but ``uniform``, which only re-runs one schedule."""
        return [(seed, t) for s, by_seed in self.histories.items() if s != "uniform"
                for seed, h in by_seed.items() for t in h]  # fmt: skip

    def plans(self) -> dict[tuple[str, int], list[ConfirmRun]]:
        c = self.config
        return {(s, seed): plan(h, self.uniform, c.top_k, c.confirm_seeds, "maximize", seed)
                for s, by_seed in self.histories.items() for seed, h in by_seed.items()}  # fmt: skip

    def confirm(self) -> None:
        """Every search's confirmation plan, plus ``rank_schedules`` more proxy-tried schedules spread
        over the proxy range (1 seed each) for the proxy-vs-full correlation."""
        runs = {(r.schedule, r.seed) for p in self.plans().values() for r in p}
        runs |= {
            (self.uniform, SEED_OFFSET + s + c) for s in self.seeds for c in range(self.config.confirm_seeds)
        }
        chosen = {schedule for schedule, _ in runs}
        tried = {t.schedule: objective(t) for _, t in self.proxy_trials() if t.schedule not in chosen}
        self.extra = spread_pick(tried, self.config.rank_schedules)
        seed_of = {t.schedule: seed for seed, t in reversed(self.proxy_trials())}
        runs |= {(s, SEED_OFFSET + seed_of[s]) for s in self.extra}
        steps = self.config.confirm_steps
        missing = [(s, seed) for s, seed in sorted(runs, key=lambda r: (r[1], r[0].ranks))
                   if self.store.get(self.runner.lora_key(s.ranks, seed, steps, "test")) is None]  # fmt: skip
        if self.jobs > 1 and missing:
            in_pool(
                self, "confirm runs", [(train_job, (s.ranks, seed, steps, "test")) for s, seed in missing]
            )
        with self.bar("confirm", len(runs)) as bar:
            for schedule, seed in sorted(runs, key=lambda r: (r[1], r[0].ranks)):
                bar.set_postfix(test=f"{self.full_run(schedule, seed):.3f}")
                bar.update(1)

    def full_run(self, schedule: RankSchedule, seed: int) -> float:
        return self.runner.metric(schedule, seed, self.config.confirm_steps, "test")

    def confirmed(self, schedule: RankSchedule, search_seed: int) -> list[float]:
        first = SEED_OFFSET + search_seed
        return [self.full_run(schedule, seed) for seed in range(first, first + self.config.confirm_seeds)]


def strategy_figures(bench: TaskBench) -> dict[str, Any]:
    baseline = [v for seed in bench.seeds for v in bench.confirmed(bench.uniform, seed)]
    plans = bench.plans()
    figures: dict[str, Any] = {}
    for strategy, by_seed in bench.histories.items():
        best = {seed: proxy_best(h) for seed, h in by_seed.items()}
        values = [v for seed, b in best.items() for v in bench.confirmed(b.schedule, seed)]
        runs = [[(r.confirms, bench.full_run(r.schedule, r.seed)) for r in plans[(strategy, seed)]]
                for seed in bench.seeds]  # fmt: skip
        results = [summarize(r, "maximize") for r in runs]
        figures[strategy] = {
            "proxy_best": mean_std([objective(b) for b in best.values()]),
            "confirmed": mean_std(values),
            "gain_points": 100 * (statistics.mean(values) - statistics.mean(baseline)),
            "service_result": mean_std([v for r in results if r for v in r["winner"]["objectives"]]),
            "trials": {seed: [{"number": t.number, "ranks": t.schedule.ranks, "seed": t.proxy_seed,
                               "objective": t.objective} for t in h] for seed, h in by_seed.items()},
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
    for _, t in bench.proxy_trials():
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
    return {"schedules": len(pairs), "extra_schedules": len(bench.extra), "spearman": rho, "pairs": pairs}


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
        "runs": bench.runner.runs, "train_seconds": bench.runner.seconds,
    }  # fmt: skip


def _model_figures(bench: TaskBench) -> dict[str, Any]:
    from bench.search_quality_model import model_figures

    return model_figures(bench)


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
    return {"config": asdict(config), "tasks": tasks, "wall_s": time.perf_counter() - start}


# --- RESULTS.md ---------------------------------------------------------------------------------


def config_from(args: argparse.Namespace) -> Config:
    preset = QUICK if args.quick else FULL
    values: dict[str, Any] = {}
    for f in fields(Config):
        given = getattr(args, f.name, None)
        if given is not None and f.name in ("tasks", "strategies"):
            given = tuple(given.split(","))
            known = TASKS if f.name == "tasks" else STRATEGIES
            if any(g not in known for g in given):
                raise SystemExit(f"--{f.name}: choose from {', '.join(known)}, got {','.join(given)}")
        values[f.name] = getattr(preset, f.name) if given is None else given
    return Config(**{**values, "adalora": preset.adalora and not args.no_adalora})


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the ~40-minute preset (default: the issue's)")
    parser.add_argument("--tasks", help=f"comma-separated, of {','.join(TASKS)}")
    parser.add_argument("--strategies", help=f"comma-separated, of {','.join(STRATEGIES)}")
    for flag in ("trials", "seeds", "steps", "confirm-steps", "confirm-seeds", "top-k", "rank-schedules"):
        parser.add_argument(f"--{flag}", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--no-adalora", action="store_true")
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
