"""Optuna's TPE over the hierarchical space, rebuilt in memory from the frozen trial history.

Each call builds a fresh in-memory study from the trials (finished ones with their values, queued
and running ones as running trials, so multivariate TPE's constant liar steers away from them) and
asks it for new vectors. The same history and seed give the same vectors; nothing is stored here (the
service mirrors every trial into an Optuna study in its database for optuna-dashboard).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from ranktune.search.proposer import SearchContext, TrialRecord
from ranktune.search.rungs import one_fidelity

optuna.logging.set_verbosity(optuna.logging.WARNING)


def distributions(context: SearchContext) -> dict[str, BaseDistribution]:
    return {d.name: FloatDistribution(d.low, d.high) for d in context.space.dimensions}


def startup_trials(context: SearchContext) -> int:
    """TPE samples at random before it models: a quarter of the trials, between 4 and 10."""
    return max(4, min(10, context.max_trials // 4))


def sampler_seed(context: SearchContext, number: int, salt: int = 0) -> int:
    return (context.seed * 1_000_003 + number * 7_919 + salt) % 2**31


def in_memory_study(context: SearchContext, trials: Sequence[TrialRecord], seed: int) -> optuna.Study:
    space = distributions(context)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # multivariate TPE is marked experimental
        sampler = optuna.samplers.TPESampler(
            seed=seed, multivariate=True, constant_liar=True, n_startup_trials=startup_trials(context)
        )
    study = optuna.create_study(direction=context.direction, sampler=sampler)
    pending: list[dict[str, float]] = []
    for record in one_fidelity(trials):  # multi-fidelity: one rung's objectives, never mixed
        if record.vector is None or len(record.vector) != len(space):
            continue
        params = dict(zip(space, (float(v) for v in record.vector), strict=True))
        if record.state == "succeeded" and record.objective is not None:
            study.add_trial(create_trial(params=params, distributions=space, value=record.objective))
        elif record.state == "pruned" and record.objective is not None:
            study.add_trial(
                create_trial(
                    params=params,
                    distributions=space,
                    state=TrialState.PRUNED,
                    intermediate_values={0: record.objective},
                )
            )
        elif record.state in ("queued", "running"):
            pending.append(params)
        else:
            study.add_trial(create_trial(params=params, distributions=space, state=TrialState.FAIL))
    for params in pending:
        study.enqueue_trial(params)
        study.ask(space)
    return study


def ask_vectors(
    context: SearchContext, trials: Sequence[TrialRecord], number: int, count: int = 1
) -> list[tuple[float, ...]]:
    """``count`` TPE proposals for trial ``number``; each later one sees the earlier ones as running."""
    space = distributions(context)
    study = in_memory_study(context, trials, sampler_seed(context, number))
    vectors = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(count):
            params = study.ask(space).params
            vectors.append(tuple(float(np.clip(params[name], 0.0, 1.0)) for name in space))
    return vectors
