"""The performance model's figures of bench/search_quality.py: its Spearman on held-out proxy trials
against the number it was fitted on, and (``--model-speed``) fitting on 10k synthetic trials and
scoring 10k candidates in the variants of ``SPEED_VARIANTS`` side by side."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.search_quality_bench import TaskBench
from bench.search_quality_common import GRID, TASKS, make_space, objective
from ranktune.search.features import Featurizer
from ranktune.search.perfmodel import PerformanceModel, spearman
from ranktune.search.schedule import RankSchedule


def model_curve(pool: Sequence[tuple[RankSchedule, float]], featurizer: Featurizer,
                orders: int = 5) -> list[dict[str, Any]]:  # fmt: skip
    """The performance model's Spearman on the trials it was not fitted on: fitted on the first n in
    arrival order (what a search has when it proposes trial n) and on n drawn at random."""
    x, y = featurizer.features([s for s, _ in pool]), np.asarray([g for _, g in pool])
    rows = []
    for n in (n for n in (4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256) if n <= len(pool) - 5):
        first = spearman(PerformanceModel.fit(x[:n], y[:n]).predict(x[n:])[0], y[n:])
        drawn = []
        for order in range(orders):
            fit, held = np.split(np.random.default_rng(order).permutation(len(pool)), [n])
            drawn.append(
                spearman(PerformanceModel.fit(x[fit], y[fit], seed=order).predict(x[held])[0], y[held])
            )
        finite = [d for d in drawn if d is not None]
        rows.append({"n": n, "held_out": len(pool) - n, "spearman_first_n": first,
                     "spearman_random_n": statistics.mean(finite) if finite else None})  # fmt: skip
    return rows


def model_figures(bench: TaskBench) -> dict[str, Any]:
    """All distinct proxy trials of ``config.steps`` steps of the task (a +asha search's trials at other
    lengths left out) in arrival order (trial number, then search seed), with targets as the engine fits
    them: gains over the search's own trial 0 (the uniform schedule at the same length and seed)."""
    steps = bench.config.steps
    trial0: dict[int, float] = {}
    seen: set[tuple[RankSchedule, int]] = set()
    pool: list[tuple[RankSchedule, float]] = []
    for seed, t in sorted(bench.proxy_trials(same_length=True), key=lambda st: (st[1].number, st[0])):
        if (t.schedule, t.proxy_seed) not in seen:
            seen.add((t.schedule, t.proxy_seed))
            if seed not in trial0:  # a plain search's trial 0: recalled, trained only for +asha alone
                trial0[seed] = bench.runner.metric(bench.uniform, seed, steps, "val")
            pool.append((t.schedule, objective(t) - trial0[seed]))
    featurizer = Featurizer(bench.space.sites, bench.space.budget.params, bench.space.budget.uniform_rank)
    return {"model_pool": len(pool), "model_curve": model_curve(pool, featurizer),
            "model_vs_full": model_vs_full(bench)}  # fmt: skip


def model_vs_full(bench: TaskBench, sizes: Sequence[int] = (8, 12, 16, 24)) -> list[dict[str, Any]]:
    """Each search's own performance model (the engine's ``fit_model`` on its first n trials, rungs and
    probe features included) against the confirmed metric: Spearman of its prediction (at the top rung
    with rungs) with the mean full-length test metric of every schedule run at full length, per strategy
    and n (mean over search seeds). The issue's bar: 0.6 by 24 trials."""
    from dataclasses import replace

    from bench.search_quality_bench import make_context
    from bench.search_quality_common import has_probe, probe_length
    from bench.search_quality_probe import probe_importance
    from ranktune.search.engine import fit_model

    full: dict[RankSchedule, list[float]] = {}
    for (schedule, _, steps, split), value in bench.runner.cache.items():
        if steps == bench.config.confirm_steps and split == "test":
            full.setdefault(schedule, []).append(value)
    schedules = list(full)
    truth = np.asarray([statistics.mean(full[x]) for x in schedules])
    rows: list[dict[str, Any]] = []
    if len(schedules) < 5:
        return rows
    for strategy, by_seed in bench.histories.items():
        if strategy == "uniform":
            continue
        longest = max(len(h) for h in by_seed.values())
        for n in sorted({*(m for m in sizes if m < longest), longest}):
            values = []
            for seed, history in by_seed.items():
                context = make_context(bench.model, bench.task, strategy, seed, bench.config, bench.space)
                if has_probe(strategy):
                    found = probe_importance(bench.runner, bench.space, seed, probe_length(bench.config))
                    context = replace(context, importance=found)
                fitted = fit_model(replace(context, model=replace(context.model, min_trials=4)),
                                   tuple(history[:n]), seed=seed)  # fmt: skip
                if fitted is not None:
                    values.append(spearman(fitted.predict_objective(schedules)[0], truth))
            finite = [v for v in values if v is not None]
            if finite:
                rows.append({"strategy": strategy, "n": n, "spearman": statistics.mean(finite),
                             "searches": len(finite), "schedules": len(schedules)})  # fmt: skip
    return rows


SPEED_VARIANTS = {"members on all rows (n-out-of-n bootstrap)": {"member_rows": 10**9},
                  "default (m-out-of-n bootstrap)": {}}  # fmt: skip


def model_speed(rows: int = 10_000, candidates: int = 10_000, repeats: int = 3) -> dict[str, Any]:
    """Featurize and fit on ``rows`` synthetic trials, featurize and score ``candidates``, on
    tiny-vlm's real site list with random rank matrices from the grid; the variants of
    ``SPEED_VARIANTS`` alternate within each repeat, so they share the machine's load."""
    from ranktune.search.perfmodel import ModelOptions

    space = make_space(*TASKS["tiny-vlm"])
    featurizer = Featurizer(space.sites, space.budget.params, space.budget.uniform_rank)
    rng = np.random.default_rng(0)
    ranks = rng.choice(np.asarray(GRID, dtype=np.float64), size=(rows + candidates, len(space.sites)))
    truth = featurizer.transform(ranks) @ rng.normal(size=len(featurizer.names))
    targets = truth[:rows] + rng.normal(0.0, truth.std() / 4, rows)
    load = os.getloadavg()[0]
    variants: dict[str, dict[str, Any]] = {
        name: {"options": overrides, "fit_s": [], "total_s": []} for name, overrides in SPEED_VARIANTS.items()
    }
    for _ in range(repeats):
        for entry in variants.values():
            options = ModelOptions(**entry["options"])
            start = time.perf_counter()
            model = PerformanceModel.fit(featurizer.transform(ranks[:rows]), targets, options=options)
            entry["fit_s"].append(time.perf_counter() - start)
            mean, _ = model.predict(featurizer.transform(ranks[rows:]))
            entry["total_s"].append(time.perf_counter() - start)
            entry["spearman"] = spearman(mean, truth[rows:])
    return {"rows": rows, "candidates": candidates, "sites": len(space.sites),
            "features": len(featurizer.names), "member_rows": ModelOptions().member_rows,
            "variants": variants, "load_average": load}  # fmt: skip
