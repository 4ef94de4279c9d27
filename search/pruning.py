"""Pruning: should a running proxy trial stop, given its intermediate measurements and the others'?

Optuna's own pruners decide (``MedianPruner`` or ``SuccessiveHalvingPruner``). The history is
replayed into a fresh in-memory study in trial order, each earlier trial reporting its measurements
as it did while it ran (so successive halving's rungs fill as they would have online), then the
running trial reports its own and the pruner answers. Pure: frozen values in, a bool out.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import optuna
from optuna.trial import TrialState

optuna.logging.set_verbosity(optuna.logging.WARNING)

Curve = Sequence[tuple[int, float]]  # (step, objective metric) in step order


@dataclass(frozen=True)
class PrunerSettings:
    kind: Literal["none", "median", "halving"] = "none"
    startup_trials: int = 5
    warmup_steps: int = 0

    def make(self) -> optuna.pruners.BasePruner:
        if self.kind == "median":
            return optuna.pruners.MedianPruner(
                n_startup_trials=self.startup_trials, n_warmup_steps=self.warmup_steps
            )
        if self.kind == "halving":
            return optuna.pruners.SuccessiveHalvingPruner()
        return optuna.pruners.NopPruner()


@dataclass(frozen=True)
class FinishedCurve:
    state: Literal["succeeded", "pruned"]
    curve: Curve
    objective: float | None = None  # the final objective of a succeeded trial


def should_prune(
    settings: PrunerSettings,
    direction: Literal["maximize", "minimize"],
    current: Curve,
    history: Sequence[FinishedCurve],
) -> bool:
    """True when the pruner stops ``current`` at its latest measurement."""
    if settings.kind == "none" or not current:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(direction=direction, pruner=settings.make())
        for past in history:
            trial = study.ask()
            pruned = False
            for step, value in past.curve:
                trial.report(value, step)
                pruned = trial.should_prune()  # fills the rungs successive halving compares against
            if past.state == "succeeded" and past.objective is not None:
                study.tell(trial, past.objective)
            else:
                study.tell(trial, state=TrialState.PRUNED if pruned or past.curve else TrialState.FAIL)
        trial = study.ask()
        for step, value in current:
            trial.report(value, step)
        return bool(trial.should_prune())
