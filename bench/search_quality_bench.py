"""One task of the search-quality bench: its fine-tunes (``Runner``, remembered in a ``RunStore``), its
searches through the service's own proposer code, their confirmation runs, and the jobs the process
pool runs (``--jobs``)."""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.search_quality_common import (
    TASKS,
    Config,
    base_strategy,
    grid_for,
    has_probe,
    has_recheck,
    has_screen,
    is_asha,
    make_space,
    objective,
    probe_length,
    proxy_budget,
    rungs,
    trial_start,
    trial_steps,
)
from bench.search_quality_runs import RunStore, in_pool, run_key
from ranktune.search.confirm import SEED_OFFSET, ConfirmRun, plan, recheck_plan
from ranktune.search.schedule import RankSchedule
from ranktune.search.space import HierarchicalSpace
from ranktune.search.strategies import SearchContext, TrialRecord, get_proposer, propose_next


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
    base: str = ""  # sha256 of the base weights, part of every key (runs on other weights never mix)
    data: str = ""  # sha256 of the task's splits, part of every key
    cache: dict[tuple[RankSchedule, int, int, str], float] = field(default_factory=dict)
    runs: int = 0
    seconds: float = 0.0
    bar: Any = None  # the progress bar of the current loop: it shows the step of the run in progress
    _used: set[str] = field(default_factory=set)

    def key(self, **what: Any) -> str:
        import torch

        c = self.config
        return run_key(bench=self.label, lr=c.lr, batch_size=c.batch_size, device=c.device,
                       torch=torch.__version__, threads=torch.get_num_threads(), base=self.base,
                       data=self.data, **what)  # fmt: skip

    def lora_key(self, ranks: tuple[int, ...], seed: int, steps: int, split: str, start: int = 0) -> str:
        """A LoRA run's key; ``start`` > 0: a run that went on from the one of ``start`` steps."""
        resumed = {"start": start} if start else {}
        return self.key(method="lora", ranks=list(ranks), seed=seed, steps=steps, split=split, **resumed)

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

    def metric(self, schedule: RankSchedule, seed: int, steps: int, split: str, start: int = 0,
               keep_state: bool = False) -> float:  # fmt: skip
        """The run's metric (trained if the store lacks it). ``start``: go on from the state of this
        schedule's ``start``-step run (a resumed +asha promotion); ``keep_state``: keep this run's state
        for a promotion to go on from."""
        key = self.lora_key(schedule.ranks, seed, steps, split, start)

        def train() -> tuple[float, float, dict[str, Any]]:
            begin = self.state(schedule, seed, start, split) if start else None
            result = self.finetune(schedule, seed, steps, split, begin, keep_state)
            if result.state is not None:
                self.store.put_state(key, result.state.to_bytes())
            kept = split == "test" and result.outcomes is not None  # confirmations: paired statistics
            extra = {"outcomes": result.to_json()["outcomes"]} if kept else {}
            return result.metric, result.wall_time_s, extra

        value = float(self.recall(key, train)["metric"])
        self.cache[(schedule, seed, steps, split)] = value
        return value

    def finetune(self, schedule: RankSchedule, seed: int, steps: int, split: str, start: Any,
                 keep_state: bool) -> Any:  # fmt: skip
        from ranktune.trainer.adapters import AdapterMethod
        from ranktune.trainer.proxy import ProxySettings, proxy_finetune

        c = self.config
        settings = ProxySettings(steps=steps, lr=c.lr, batch_size=c.batch_size, seed=seed)
        return proxy_finetune(self.task, schedule, AdapterMethod("lora"), settings, device=c.device,
                              eval_split=split, on_step=self.show_step, start=start,
                              keep_state=keep_state)  # fmt: skip

    def state(self, schedule: RankSchedule, seed: int, steps: int, split: str) -> Any:
        """The training state at the end of the ``steps``-step run of a resume chain (its own start is
        the rung below on the config's ladder). Where the store has no state for it (its run finished
        before states were kept, or in another store) the chain is trained again for it, off the books:
        on CPU that run is bit-for-bit the stored one."""
        from ranktune.trainer.resume import TrainState

        ladder = rungs(self.config)
        below = ladder.rungs[ladder.rungs.index(steps) - 1] if ladder and steps in ladder.rungs[1:] else 0
        key = self.lora_key(schedule.ranks, seed, steps, split, below)
        data = self.store.get_state(key)
        if data is None:
            begin = self.state(schedule, seed, below, split) if below else None
            result = self.finetune(schedule, seed, steps, split, begin, keep_state=True)
            data = result.state.to_bytes()
            self.store.put_state(key, data)
        return TrainState.from_bytes(data)

    def show_step(self, step: int, loss: float) -> None:
        if self.bar is not None and step % 25 == 0:
            self.bar.set_postfix_str(f"step {step} loss {loss:.3f}", refresh=True)


def make_context(model: str, task: str, strategy: str, seed: int, config: Config,
                 space: HierarchicalSpace) -> SearchContext:  # fmt: skip
    """The proposer's context as the service builds it from a spec with default settings.

    A ``+asha`` label's spec names its base strategy and has ``fidelity`` (``config.fidelity``) and no
    ``proxy.steps``, as the service requires; its ``max_trials`` is the most trials its compute-matched
    search can run (every one at the lowest rung), a cap the search never reaches before its steps."""
    from ranktune.service.schemas.spec import SearchCreate
    from ranktune.service.searching import search_context

    proxy: dict[str, Any] = {"lr": config.lr, "batch_size": config.batch_size, "seed": seed}
    spec: dict[str, Any] = {
        "name": f"bench-{strategy}-{seed}", "model": model, "task": task, "strategy": base_strategy(strategy),
        "budget": {"rank": config.budget_rank}, "space": {"grid": list(grid_for(config.budget_rank))},
        "max_trials": config.trials,
        "proxy": {"steps": config.steps, **proxy},
    }  # fmt: skip
    if is_asha(strategy):
        if config.fidelity is None:
            raise ValueError(f"strategy {strategy!r}: a multi-fidelity search needs Config.fidelity")
        low, high, eta = config.fidelity
        spec["fidelity"] = {"min_steps": low, "max_steps": high, "eta": eta}
        spec["proxy"] = proxy
        spec["max_trials"] = min(10_000, math.ceil(proxy_budget(config) / low))
    if has_probe(strategy):
        spec["probe"] = {}
    if has_screen(strategy):
        spec["screen"] = True
    elif base_strategy(strategy) == "perfmodel":
        spec["screen"] = False  # the service's perfmodel screens by default; a plain label does not
    return search_context(SearchCreate.model_validate(spec), space)


def run_search(runner: Runner, context: SearchContext, strategy: str, bar: Any) -> list[TrialRecord]:
    """Trials one at a time; each proposer sees the succeeded trials before it (a fresh proposer per
    proposal, as the service builds one per call).

    With rungs (a ``+asha`` label) each trial trains its proposal's steps and carries its rung, and the
    search is compute-matched: it proposes until its trials' steps reach ``proxy_budget`` (the bar counts
    steps), instead of ``max_trials`` trials."""
    history: list[TrialRecord] = []
    proposer, budget = base_strategy(strategy), proxy_budget(runner.config)
    multi = context.fidelity is not None
    spent = 0
    if has_probe(strategy):  # the service leases it after uniform; its finding steers from then on
        from bench.search_quality_probe import probe_importance

        steps = probe_length(runner.config)
        context = replace(context, importance=probe_importance(runner, context.space, context.seed, steps))
        spent += steps
        bar.update(steps if multi else 0)
    while len(history) < context.max_trials and (spent < budget or not multi):
        number = len(history)
        p = propose_next(get_proposer(proposer), context, number, tuple(history))
        steps = p.steps or runner.config.steps
        trial = TrialRecord(number, "succeeded", p.schedule, p.proxy_seed, None, {}, p.vector, rung=p.rung,
                            config=p.config, steps=p.steps)  # fmt: skip
        start = trial_start(trial, history, runner.config)
        keep = runner.config.resume and context.fidelity is not None and p.rung < context.fidelity.top
        value = runner.metric(p.schedule, p.proxy_seed, steps, "val", start=start, keep_state=keep)
        history.append(replace(trial, objective=value, metrics={context.metric: value}))
        spent += steps - start  # a resumed promotion trains only the steps its rung adds
        best = f"{objective(proxy_best(history)):.3f}"
        bar.set_postfix(trial=number, val=f"{value:.3f}", best=best, **({"rung": p.rung} if multi else {}))
        bar.update(steps - start if multi else 1)
    if has_recheck(strategy):  # as the service's confirm.recheck: after the last proxy trial
        for again in recheck_plan(history, runner.config.recheck, "maximize"):
            value = runner.metric(again.schedule, again.proxy_seed, again.steps or runner.config.steps, "val")
            history.append(replace(again, number=len(history), state="succeeded", objective=value,
                                   metrics={context.metric: value}))  # fmt: skip
    return history


def proxy_best(history: Sequence[TrialRecord]) -> TrialRecord:
    """The best trial of the highest rung reached (every trial's rung is 0 without rungs), as
    ``search.confirm.plan`` ranks them."""
    return max(history, key=lambda t: (t.rung, objective(t), -t.number))


def trials_to_reach(history: Sequence[TrialRecord], target: float) -> int | None:
    """How many trials (trial 0 included) until the running best reached ``target``."""
    best = -math.inf
    for count, trial in enumerate(history, start=1):
        best = max(best, objective(trial))
        if best >= target:
            return count
    return None


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
        from ranktune.trainer.fingerprint import base_weights_sha256
        from ranktune.trainer.tasks.registry import load_task

        self.model, self.task = TASKS[self.name]
        task = load_task(self.task, self.model)
        self.runner = Runner(task, self.config, f"{self.model}+{self.task}", self.store,
                             base=base_weights_sha256(self.model), data=task.data_sha256())  # fmt: skip
        self.space = make_space(self.model, self.task, self.config.budget_rank)
        self.uniform = self.space.uniform()
        self.seeds = list(range(self.config.seeds))

    def bar(self, desc: str, total: int, unit: str = "it") -> Any:
        from tqdm import tqdm

        self.runner.bar = tqdm(
            total=total, desc=f"{self.name} {desc}", unit=unit, file=sys.stderr, disable=not self.progress
        )
        return self.runner.bar

    def trial_steps(self, trial: TrialRecord) -> int:
        return trial_steps(trial, self.config)

    def search(self) -> None:
        """Every (strategy, search seed) search; with ``jobs`` > 1 several at once, tpe before perfmodel
        (perfmodel replays tpe's first trials from the store instead of training them again)."""
        pairs = list(itertools.product(self.config.strategies, self.seeds))
        if self.jobs > 1:
            # Known before any training: trial 0 of every search (the uniform schedule with the search's
            # seed, at its first rung's steps in a +asha search) and every trial of a strategy that
            # ignores history (uniform, random). Each distinct run is its own job, so no two processes
            # train the same run and none waits on a search.
            known = self.known_runs(pairs)
            in_pool(self, "known trials", [(train_job, (*run, "val")) for run in known])
            order = sorted(pairs, key=lambda p: (base_strategy(p[0]) == "perfmodel", p[1]))
            found = in_pool(self, "searches", [(search_job, (s, seed)) for s, seed in order])
            done = dict(zip(order, found, strict=True))
        else:
            done = {p: self.run_one_search(*p) for p in pairs}
        for (strategy, seed), history in ((p, done[p]) for p in pairs):
            self.histories.setdefault(strategy, {})[seed] = history
            for t in history:  # recalled from the store: the runner counts what the figures rest on
                self.runner.metric(t.schedule, t.proxy_seed, self.trial_steps(t), "val",
                                   start=trial_start(t, history, self.config))  # fmt: skip

    def known_runs(self, pairs: Sequence[tuple[str, int]]) -> list[tuple[tuple[int, ...], int, int]]:
        """(ranks, proxy seed, steps) of every proposal that needs no finished trial, each once, in order.

        A ``+asha`` search is history-dependent whatever its proposer (its promotions follow results):
        only its trial 0, at the first rung's steps, is known."""
        runs: dict[tuple[tuple[int, ...], int, int], None] = {}
        for strategy, seed in pairs:
            proposer = get_proposer(base_strategy(strategy))
            context = make_context(self.model, self.task, strategy, seed, self.config, self.space)
            free = not proposer.uses_history and context.fidelity is None
            for number in range(context.max_trials if free else 1):
                p = propose_next(proposer, context, number, ())
                runs[(p.schedule.ranks, p.proxy_seed, p.steps or self.config.steps)] = None
        return list(runs)

    def history_free_runs(self, pairs: Sequence[tuple[str, int]]) -> list[tuple[tuple[int, ...], int]]:
        """(ranks, proxy seed) of the ``known_runs`` that train ``config.steps``."""
        return [(ranks, seed) for ranks, seed, steps in self.known_runs(pairs) if steps == self.config.steps]

    def run_one_search(self, strategy: str, seed: int) -> list[TrialRecord]:
        context = make_context(self.model, self.task, strategy, seed, self.config, self.space)
        multi = context.fidelity is not None  # compute-matched: the bar counts proxy steps
        total, unit = (proxy_budget(self.config), "step") if multi else (self.config.trials, "trial")
        with self.bar(f"{strategy} seed {seed}", total, unit) as bar:
            return run_search(self.runner, context, strategy, bar)

    def proxy_trials(self, same_length: bool = False) -> list[tuple[int, TrialRecord]]:
        """(search seed, trial) of every strategy but ``uniform``, which only re-runs one schedule;
        ``same_length``: only those trained ``config.steps`` (a +asha search's other rungs left out)."""
        return [(seed, t) for s, by_seed in self.histories.items() if s != "uniform"
                for seed, h in by_seed.items() for t in h
                if not same_length or self.trial_steps(t) == self.config.steps]  # fmt: skip

    def plans(self) -> dict[tuple[str, int], list[ConfirmRun]]:
        c = self.config
        return {(s, seed): plan(h, self.uniform, c.top_k, c.confirm_seeds, "maximize", seed)
                for s, by_seed in self.histories.items() for seed, h in by_seed.items()}  # fmt: skip

    def confirm(self) -> None:
        """Every search's confirmation plan, plus ``rank_schedules`` more proxy-tried schedules spread
        over the proxy range (1 seed each; trials of ``config.steps`` only) for the proxy-vs-full
        correlation."""
        runs = {(r.schedule, r.seed) for p in self.plans().values() for r in p}
        runs |= {
            (self.uniform, SEED_OFFSET + s + c) for s in self.seeds for c in range(self.config.confirm_seeds)
        }
        chosen = {schedule for schedule, _ in runs}
        proxies = self.proxy_trials(same_length=True)  # the correlation's proxy objectives: one length
        tried = {t.schedule: objective(t) for _, t in proxies if t.schedule not in chosen}
        self.extra = spread_pick(tried, self.config.rank_schedules)
        seed_of = {t.schedule: seed for seed, t in reversed(proxies)}
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


# --- work done in pool processes (spawned: each builds its own task and sets its thread count) ---------


def _start(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def search_job(name: str, config: Any, strategy: str, seed: int, store: Path, threads: int) -> list[Any]:
    """One (strategy, search seed) search in a pool process; its fine-tunes land in ``store``."""

    _start(threads)
    bench = TaskBench(name, config, progress=False, store=RunStore(store))
    return bench.run_one_search(strategy, seed)


def train_job(name: str, config: Any, ranks: tuple[int, ...], seed: int, steps: int, split: str,
              store: Path, threads: int) -> float:  # fmt: skip
    """One fine-tune of ``ranks`` in a pool process; the result lands in ``store``."""
    from ranktune.search.schedule import RankSchedule

    _start(threads)
    bench = TaskBench(name, config, progress=False, store=RunStore(store))
    schedule = RankSchedule(bench.space.sites, ranks, bench.space.alpha)
    return bench.runner.metric(schedule, seed, steps, split)
