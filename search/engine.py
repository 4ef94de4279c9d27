"""The search strategies that learn from history: ``tpe`` and ``perfmodel`` (the default).

- ``tpe``: multivariate TPE with constant liar over the hierarchical vector (``search.sampling``).
- ``perfmodel``: HyDRA's screening. Once ``min_trials`` trials succeeded (own plus transferred), a
  bagged LightGBM model (``search.perfmodel``) is fitted on the gains over the uniform baseline; a
  pool of candidates (TPE proposals, mutations of the best trials' vectors and random vectors) is
  projected onto the budget, scored, and the best by the acquisition rule (UCB or EI) is dispatched.
  Before that threshold it defers to TPE.

Targets are gains over each search's own uniform baseline (trial 0), oriented so larger is better;
that is what makes trials of earlier searches (other budgets, other seeds) usable for transfer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ranktune.search import rungs
from ranktune.search.features import Featurizer
from ranktune.search.perfmodel import ModelQuality, PerformanceModel, acquisition, cross_validate
from ranktune.search.proposer import Proposal, Proposer, SearchContext, TrialRecord
from ranktune.search.sampling import ask_vectors, sampler_seed
from ranktune.search.schedule import RankSchedule

TPE_CANDIDATES = 16  # the pool starts with up to this many TPE proposals (each ask costs ~10 ms)
MUTATION_SHARE = 0.5  # of the rest of the pool: mutations of the best trials' vectors; then random
MUTATION_SCALE = 0.15
PRIOR_WEIGHT = 0.5  # a transferred trial counts half as much as one of this search


class TpeProposer(Proposer):
    name = "tpe"

    def propose(self, context: SearchContext, number: int, trials: tuple[TrialRecord, ...]) -> Proposal:
        (vector,) = ask_vectors(context, trials, number)
        return Proposal(context.space.to_schedule(vector), context.seed, vector)


@dataclass(frozen=True)
class TrainingData:
    features: NDArray[np.float64]
    targets: NDArray[np.float64]  # oriented gains over the baseline: larger is better
    weights: NDArray[np.float64]
    numbers: NDArray[np.int64]  # trial numbers (-1 for transferred trials)
    own: NDArray[np.bool_]
    baseline: float
    sign: float

    @property
    def own_count(self) -> int:
        return int(self.own.sum())

    def key(self) -> tuple[object, ...]:
        return (self.targets.tobytes(), self.numbers.tobytes())


def baseline_of(trials: tuple[TrialRecord, ...]) -> float | None:
    """The uniform baseline's objective: trial 0's, when it succeeded."""
    for record in trials:
        if record.number == 0:
            return record.objective if record.state == "succeeded" else None
    return None


def fidelity_column(context: SearchContext, steps: Sequence[int | None]) -> NDArray[np.float64] | None:
    """Multi-fidelity searches: each row's length as log(steps) / log(max_steps), 1.0 at the top rung;
    None for a search without rungs (its features stay as they were)."""
    if context.fidelity is None:
        return None
    top = math.log(context.fidelity.max_steps + 1)
    return np.asarray([math.log((s or context.fidelity.max_steps) + 1) / top for s in steps])


def training_data(
    context: SearchContext, trials: tuple[TrialRecord, ...], featurizer: Featurizer
) -> TrainingData | None:
    """Gains over uniform. With rungs every trial is measured against uniform at its own rung and the
    rung's length is a feature: one model learns from every rung and predicts at any of them."""
    by_rung = rungs.baselines(trials) if context.fidelity else {}
    baseline = by_rung.get(0) if context.fidelity else baseline_of(trials)
    if baseline is None:
        return None
    sign = 1.0 if context.direction == "maximize" else -1.0
    done = [t for t in trials if t.state == "succeeded" and t.objective is not None]
    if context.fidelity:
        done = [t for t in done if t.rung in by_rung]
    schedules: list[RankSchedule] = [t.schedule for t in done]
    targets = [sign * (float(t.objective) - by_rung.get(t.rung, baseline)) for t in done]  # type: ignore[arg-type]
    numbers = [t.number for t in done]
    steps = [t.steps for t in done]
    # Transferred trials ran at another search's length: with rungs they cannot be placed on the axis.
    prior = context.prior if context.model.transfer and context.fidelity is None else ()
    schedules += [p.schedule for p in prior]
    targets += [sign * (p.objective - p.baseline) for p in prior]
    numbers += [-1] * len(prior)
    own = np.asarray([n >= 0 for n in numbers], dtype=bool)
    return TrainingData(
        features=with_fidelity(featurizer.features(schedules), fidelity_column(context, steps)),
        targets=np.asarray(targets, dtype=np.float64),
        weights=np.where(own, 1.0, PRIOR_WEIGHT),
        numbers=np.asarray(numbers, dtype=np.int64),
        own=own,
        baseline=baseline,
        sign=sign,
    )


def with_fidelity(features: NDArray[np.float64], column: NDArray[np.float64] | None) -> NDArray[np.float64]:
    return features if column is None else np.column_stack([features, column])


@dataclass
class FittedModel:
    model: PerformanceModel
    data: TrainingData
    featurizer: Featurizer
    quality: ModelQuality
    context: SearchContext

    def predict_objective(
        self, schedules: list[RankSchedule], steps: int | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Mean (oriented gain) and spread for each schedule; with rungs, at ``steps`` (default: the
        top rung)."""
        column = fidelity_column(self.context, [steps] * len(schedules))
        return self.model.predict(with_fidelity(self.featurizer.features(schedules), column))

    def to_objective(self, gain: float) -> float:
        return self.data.baseline + self.data.sign * gain


def featurizer_for(context: SearchContext) -> Featurizer:
    space = context.space
    return Featurizer(space.sites, space.budget.params, space.budget.uniform_rank, context.importance)


def fit_model(context: SearchContext, trials: tuple[TrialRecord, ...], seed: int) -> FittedModel | None:
    """The performance model on this history, or None while there is too little of it."""
    featurizer = featurizer_for(context)
    data = training_data(context, trials, featurizer)
    if data is None or len(data.targets) < context.model.min_trials or data.own_count < 2:
        return None
    model = PerformanceModel.fit(data.features, data.targets, data.weights, seed=seed)
    quality = cross_validate(data.features, data.targets, data.numbers, data.own, data.weights, seed=seed)
    return FittedModel(model, data, featurizer, _in_objective_units(quality, data), context)


def _in_objective_units(quality: ModelQuality, data: TrainingData) -> ModelQuality:
    points = tuple(
        (n, data.baseline + data.sign * p, data.baseline + data.sign * a) for n, p, a in quality.points
    )
    return ModelQuality(quality.trials, quality.spearman, quality.mae, points)


def candidate_vectors(
    context: SearchContext, trials: tuple[TrialRecord, ...], number: int
) -> list[tuple[float, ...]]:
    """TPE proposals, mutations of the best trials' vectors, and random vectors: ``pool`` in all.

    On the synthetic problem of tests/search a pool of TPE proposals alone screened best (wide pools
    of mutations and random vectors let the trees, which cannot extrapolate, pick timid schedules),
    so the default pool (16) is TPE's; larger pools add mutations and random vectors.
    """
    pool = context.model.pool
    rng = np.random.default_rng(sampler_seed(context, number, salt=1))
    vectors = ask_vectors(context, trials, number, count=min(pool, TPE_CANDIDATES))
    sign = 1.0 if context.direction == "maximize" else -1.0
    ranked = sorted(
        (t for t in trials if t.state == "succeeded" and t.objective is not None and t.vector is not None),
        key=lambda t: -sign * float(t.objective),  # type: ignore[arg-type]
    )[:5]
    mutations = int((pool - len(vectors)) * MUTATION_SHARE)
    for i in range(mutations if ranked else 0):
        parent = np.asarray(ranked[i % len(ranked)].vector, dtype=np.float64)
        child = np.clip(parent + rng.normal(0.0, MUTATION_SCALE, parent.shape), 0.0, 1.0)
        vectors.append(tuple(float(v) for v in child))
    while len(vectors) < pool:
        vectors.append(tuple(context.space.random_vector(rng)))
    return vectors


class PerfModelProposer(Proposer):
    name = "perfmodel"

    def __init__(self) -> None:
        # Within one top-up the history only gains queued trials: fit once, report the quality once.
        self._fitted: dict[tuple[object, ...], FittedModel | None] = {}
        self._reported: set[tuple[object, ...]] = set()

    def model_for(
        self, context: SearchContext, trials: tuple[TrialRecord, ...]
    ) -> tuple[tuple[object, ...], FittedModel | None]:
        featurizer = featurizer_for(context)
        data = training_data(context, trials, featurizer)
        key = ("none",) if data is None else data.key()
        if key not in self._fitted:
            self._fitted[key] = fit_model(context, trials, seed=context.seed)
        return key, self._fitted[key]

    def propose(self, context: SearchContext, number: int, trials: tuple[TrialRecord, ...]) -> Proposal:
        key, fitted = self.model_for(context, trials)
        if fitted is None:
            return TpeProposer().propose(context, number, trials)
        fresh = key not in self._reported
        self._reported.add(key)
        tried = {t.schedule.ranks for t in trials}
        candidates: dict[tuple[int, ...], tuple[RankSchedule, tuple[float, ...]]] = {}
        for vector in candidate_vectors(context, trials, number):
            schedule = context.space.to_schedule(vector)
            if schedule.ranks not in tried and schedule.ranks not in candidates:
                candidates[schedule.ranks] = (schedule, vector)
        quality = fitted.quality if fresh else None
        if not candidates:
            proposal = TpeProposer().propose(context, number, trials)
            return Proposal(proposal.schedule, proposal.proxy_seed, proposal.vector, quality=quality)
        schedules = [s for s, _ in candidates.values()]
        mean, std = fitted.predict_objective(schedules)
        best = float(fitted.data.targets[fitted.data.own].max())
        scores = acquisition(mean, std, best, context.model.acquisition, context.model.kappa)
        pick = int(np.argmax(scores))
        schedule, vector = list(candidates.values())[pick]
        gain = float(mean[pick])
        if context.fidelity is not None:  # it trains at rung 0: predict what it will measure there
            gain = float(fitted.predict_objective([schedule], context.fidelity.steps(0))[0][0])
        return Proposal(schedule, context.seed, vector, fitted.to_objective(gain), quality)

    def promotion_scores(
        self, context: SearchContext, trials: tuple[TrialRecord, ...], rung: int
    ) -> Mapping[int, float] | None:
        """The model's gain at the top rung, moved by how far each schedule's own result at ``rung``
        was from the model's prediction there; None until the model is fitted."""
        _, fitted = self.model_for(context, trials)
        base = rungs.baselines(trials).get(rung)
        if fitted is None or context.fidelity is None or base is None:
            return None
        done = [t for t in rungs.succeeded(trials, rung) if t.config_number != rungs.BASELINE]
        if not done:
            return None
        schedules = [t.schedule for t in done]
        top, _ = fitted.predict_objective(schedules)
        here, _ = fitted.predict_objective(schedules, context.fidelity.steps(rung))
        own = [fitted.data.sign * (float(t.objective) - base) for t in done]  # type: ignore[arg-type]
        return {t.config_number: float(p + (o - h)) for t, p, h, o in zip(done, top, here, own, strict=True)}


class CascadeProposer(PerfModelProposer):
    """``perfmodel`` in a multi-fidelity search that starts with the importance probe: the spec of a
    ``cascade`` search gets rungs around ``proxy.steps`` (a third of it to three times it, eta 3) and
    ``probe`` unless it sets them (``service.schemas.spec``); the proposals are perfmodel's, its
    promotions ranked by the model's top-rung prediction (``search.rungs``)."""

    name = "cascade"
