"""HyDRA's lightweight performance model: predicts a schedule's objective from its features.

A bagged ensemble of small LightGBM regressors: each member is fitted on a bootstrap resample of
the finished trials, the ensemble's mean is the prediction and its spread the uncertainty that the
acquisition rules (UCB, EI) trade against it. Pure numpy/LightGBM over arrays: no database, no state
outside the fitted object, deterministic for the same data and seed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

Acquisition = Literal["ucb", "ei"]


@dataclass(frozen=True)
class ModelOptions:
    bags: int = 5
    rounds: int = 80
    learning_rate: float = 0.08
    num_leaves: int = 7
    min_data_in_leaf: int = 2
    feature_fraction: float = 0.8
    threads: int = 1  # LightGBM threads; one is fastest for these sizes on a shared 2-core machine
    # Each member sees a bootstrap resample of at most this many rows (the m-out-of-n bootstrap):
    # beyond a few thousand trials more rows barely move the ranking but cost linear time per round.
    member_rows: int = 4000


def _lightgbm_params(options: ModelOptions, rows: int, seed: int) -> dict[str, Any]:
    return {
        "objective": "regression",
        "learning_rate": options.learning_rate,
        "num_leaves": options.num_leaves,
        "min_data_in_leaf": min(options.min_data_in_leaf, max(1, rows // 4)),
        "min_data_in_bin": 1,
        "min_sum_hessian_in_leaf": 0.0,
        "feature_fraction": options.feature_fraction,
        "feature_fraction_seed": seed,
        "lambda_l2": 1.0,
        "max_bin": 63,
        "num_threads": options.threads,
        "deterministic": True,
        "force_col_wise": True,  # row-wise histograms were 10x slower here at 10k rows
        "verbosity": -1,
        "seed": seed,
    }


class PerformanceModel:
    """Fitted ensemble; ``predict`` gives the mean and standard deviation over its members."""

    def __init__(self, members: list[Any], constant: float | None, shift: float, scale: float) -> None:
        self.members = members
        self.constant = constant
        self.shift, self.scale = shift, scale

    @classmethod
    def fit(
        cls,
        features: NDArray[np.float64],
        targets: NDArray[np.float64],
        weights: NDArray[np.float64] | None = None,
        seed: int = 0,
        options: ModelOptions | None = None,
    ) -> PerformanceModel:
        import lightgbm as lgb

        options = options or ModelOptions()
        x = np.asarray(features, dtype=np.float64)
        y = np.asarray(targets, dtype=np.float64)
        if x.ndim != 2 or y.shape != (x.shape[0],) or x.shape[0] == 0:
            raise ValueError(f"need features (n, d) and targets (n,), got {x.shape} and {y.shape}")
        shift, scale = float(y.mean()), float(y.std()) or 1.0
        if x.shape[0] < 3 or float(y.std()) == 0.0:
            return cls([], float(y.mean()), shift, scale)
        z = (y - shift) / scale
        w = np.ones_like(z) if weights is None else np.asarray(weights, dtype=np.float64)
        rng = np.random.default_rng(seed)
        members = []
        for bag in range(options.bags):
            rows = (
                rng.integers(0, x.shape[0], min(x.shape[0], options.member_rows))
                if options.bags > 1
                else np.arange(x.shape[0])
            )
            params = _lightgbm_params(options, x.shape[0], seed * 7919 + bag)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data = lgb.Dataset(x[rows], z[rows], weight=w[rows], params={"verbosity": -1})
                members.append(lgb.train(params, data, num_boost_round=options.rounds))
        return cls(members, None, shift, scale)

    def predict(self, features: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if self.constant is not None:
            return np.full(x.shape[0], self.constant), np.zeros(x.shape[0])
        outputs = np.stack([m.predict(x) for m in self.members]) * self.scale + self.shift
        return outputs.mean(axis=0), outputs.std(axis=0)


def acquisition(
    mean: NDArray[np.float64], std: NDArray[np.float64], best: float, rule: Acquisition, kappa: float = 1.0
) -> NDArray[np.float64]:
    """Scores to maximise (targets are oriented so that larger is better)."""
    if rule == "ucb":
        return mean + kappa * std
    sigma = np.maximum(std, 1e-9)
    gap = mean - best
    z = gap / sigma
    cdf = 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * z**2) / math.sqrt(2.0 * math.pi)
    return gap * cdf + sigma * pdf


def _erf(x: NDArray[np.float64]) -> NDArray[np.float64]:
    from scipy.special import erf

    return np.asarray(erf(x), dtype=np.float64)


@dataclass(frozen=True)
class ModelQuality:
    """Cross-validated quality of a refit: how well held-out trials were ranked and predicted."""

    trials: int
    spearman: float | None
    mae: float | None
    points: tuple[tuple[int, float, float], ...]  # (trial number, predicted, actual)

    def to_json(self) -> dict[str, Any]:
        return {
            "trials": self.trials,
            "spearman": self.spearman,
            "mae": self.mae,
            "points": [{"trial_number": n, "predicted": p, "actual": a} for n, p, a in self.points],
        }


def spearman(a: NDArray[np.float64], b: NDArray[np.float64]) -> float | None:
    """Spearman's rank correlation, or None when either side is constant or too short."""
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    from scipy.stats import spearmanr

    value = float(spearmanr(a, b).statistic)
    return value if math.isfinite(value) else None


def spearman_interval(
    a: NDArray[np.float64], b: NDArray[np.float64], confidence: float = 0.95, reps: int = 2000, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of Spearman's rho over the (a, b) pairs; None below 4 pairs."""
    if len(a) < 4:
        return None
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(a), size=(reps, len(a)))
    ra, rb = rankdata(np.asarray(a)[index], axis=1), rankdata(np.asarray(b)[index], axis=1)
    ra, rb = ra - ra.mean(axis=1, keepdims=True), rb - rb.mean(axis=1, keepdims=True)
    scale = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    rho = (ra * rb).sum(axis=1)[scale > 0] / scale[scale > 0]  # resamples with a constant side drop out
    if rho.size < reps // 2:
        return None
    tail = (1 - confidence) / 2
    return float(np.quantile(rho, tail)), float(np.quantile(rho, 1 - tail))


def cross_validate(
    features: NDArray[np.float64],
    targets: NDArray[np.float64],
    numbers: NDArray[np.int64],
    evaluate: NDArray[np.bool_],
    weights: NDArray[np.float64] | None = None,
    folds: int = 5,
    seed: int = 0,
    offset: float = 0.0,
) -> ModelQuality:
    """K-fold predictions for the rows marked ``evaluate``; the other rows (transferred history) are
    always in the training folds. ``offset`` is added back to predictions and targets for display."""
    held = np.flatnonzero(evaluate)
    if held.size < 4:
        return ModelQuality(int(held.size), None, None, ())
    k = min(folds, held.size)
    order = np.random.default_rng(seed).permutation(held)
    predicted = np.empty(held.size)
    position = {row: i for i, row in enumerate(held)}
    single = ModelOptions(bags=1)
    for fold in range(k):
        test = order[fold::k]
        train = np.setdiff1d(np.arange(len(targets)), test)
        model = PerformanceModel.fit(
            features[train],
            targets[train],
            None if weights is None else weights[train],
            seed=seed + fold,
            options=single,
        )
        mean, _ = model.predict(features[test])
        for row, value in zip(test, mean, strict=True):
            predicted[position[row]] = value
    actual = targets[held]
    points = tuple(
        (int(numbers[row]), float(p + offset), float(a + offset))
        for row, p, a in sorted(zip(held, predicted, actual, strict=True), key=lambda r: numbers[r[0]])
    )
    return ModelQuality(
        trials=int(held.size),
        spearman=spearman(predicted, actual),
        mae=float(np.mean(np.abs(predicted - actual))),
        points=points,
    )
