"""The service side of the search engine: what a heartbeat can change about a running proxy trial.

- Pruning: the trial's intermediate objective values and those of the search's finished proxy
  trials go to ``search.pruning``; a pruned trial ends as ``pruned`` and its worker is told to stop.
- Dynamic re-allocation: site statistics sent at a ``dynamic.at`` fraction go to ``search.dynamic``
  with the performance model as the judge; the answer carries the new schedule, recorded in the
  trial's timeline.

Reads rows, hands frozen values to ``search/``, and writes the outcome; the caller holds the locks
(search, trial, lease) and commits.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ranktune.search.dynamic import reallocate
from ranktune.search.engine import fit_model
from ranktune.search.pruning import FinishedCurve, PrunerSettings, should_prune
from ranktune.search.schedule import RankSchedule
from ranktune.service.db.models import Measurement, Search, Trial
from ranktune.service.db.repository.trials import final_schedule, prior_trials, trial_records
from ranktune.service.schemas.spec import PROXY_OPTIONS_SENT_WHEN_SET, ProxySpec, SearchCreate
from ranktune.service.searching import search_context, stored_space


def job_proxy(spec: SearchCreate, kind: str, seed: int, steps: int | None = None) -> dict[str, Any]:
    """The proxy settings a worker trains a trial with: confirm runs use the confirmation length, a
    multi-fidelity trial its rung's ``steps``.

    The memory and precision options go only when they differ from their defaults: a worker from
    before them refuses settings it does not know, and runs every search that leaves them unset."""
    defaults = ProxySpec()
    proxy = {
        key: value
        for key, value in spec.proxy.model_dump(mode="json").items()
        if key not in PROXY_OPTIONS_SENT_WHEN_SET or value != getattr(defaults, key)
    }
    proxy["seed"] = seed
    if kind == "confirm" and spec.confirm is not None:
        proxy["steps"] = spec.confirm.steps
    elif steps is not None:
        proxy["steps"] = steps
    return proxy


def job_dynamic(spec: SearchCreate, kind: str) -> dict[str, Any] | None:
    """When a trial reports its adapters' statistics: a dynamic-mode proxy trial at the spec's
    fractions, the importance probe once at its end."""
    if kind == "probe":
        return {"at": [1.0]}
    return spec.dynamic.model_dump(mode="json") if spec.dynamic and kind == "proxy" else None


def _curves(session: Session, search_id: int, states: tuple[str, ...]) -> dict[int, list[tuple[int, float]]]:
    """(step, metric) of each proxy trial in ``states``, for its latest attempt."""
    rows = session.execute(
        select(Measurement.trial_id, Measurement.step, Measurement.metric)
        .join(Trial, Trial.id == Measurement.trial_id)
        .where(
            Trial.search_id == search_id,
            Trial.kind == "proxy",
            Trial.state.in_(states),
            Measurement.attempt == Trial.attempt,
            Measurement.metric.is_not(None),
        )
        .order_by(Trial.number, Measurement.step)
    ).all()
    curves: dict[int, list[tuple[int, float]]] = {}
    for trial_id, step, metric in rows:
        curves.setdefault(trial_id, []).append((int(step), float(metric or 0.0)))
    return curves


def prune_reason(session: Session, search: Search, spec: SearchCreate, trial: Trial) -> str | None:
    """Why ``trial`` should stop now, or None to let it go on."""
    settings = PrunerSettings(spec.pruner.kind, spec.pruner.startup_trials, spec.pruner.warmup_steps)
    if settings.kind == "none" or trial.kind != "proxy":
        return None
    current = _curves(session, search.id, ("running",)).get(trial.id, [])
    finished = session.execute(
        select(Trial.id, Trial.state, Trial.objective)
        .where(Trial.search_id == search.id, Trial.kind == "proxy", Trial.state.in_(("succeeded", "pruned")))
        .order_by(Trial.number)
    ).all()
    curves = _curves(session, search.id, ("succeeded", "pruned"))
    history = [
        FinishedCurve("succeeded" if state == "succeeded" else "pruned", curves.get(tid, []), objective)
        for tid, state, objective in finished
    ]
    if not should_prune(settings, spec.objective.direction, current, history):
        return None
    step, value = current[-1]
    return f"pruned at step {step} ({spec.objective.metric} {value:.4g}, {settings.kind} pruner)"


def last_value(session: Session, trial: Trial) -> float | None:
    value = session.scalar(
        select(Measurement.metric)
        .where(
            Measurement.trial_id == trial.id,
            Measurement.attempt == trial.attempt,
            Measurement.metric.is_not(None),
        )
        .order_by(Measurement.step.desc())
        .limit(1)
    )
    return None if value is None else float(value)


def reallocation(
    session: Session, search: Search, spec: SearchCreate, trial: Trial, stats: dict[str, Any], step: int
) -> tuple[RankSchedule, dict[str, Any]] | None:
    """The re-allocated schedule and its timeline event, or None when no re-allocation is due."""
    if spec.dynamic is None or trial.kind != "proxy":
        return None
    timeline = list(trial.timeline or [])
    if sum(1 for e in timeline if isinstance(e, dict) and e.get("source") == "dynamic") >= len(
        spec.dynamic.at
    ):
        return None
    space = stored_space(search.spec, search.sites)
    current = final_schedule(trial.schedule, trial.timeline)
    prior = prior_trials(session, search, spec) if spec.performance_model.transfer else ()
    fitted = fit_model(
        search_context(spec, space, prior), trial_records(session, search.id), seed=spec.proxy.seed
    )
    scorer = None if fitted is None else (lambda pool: [float(v) for v in fitted.predict_objective(pool)[0]])
    schedule, reason = reallocate(space, current, stats, scorer)
    event = {
        "step": step,
        "schedule": schedule.to_json(),
        "parameter_count": schedule.parameter_count,
        "reason": reason,
        "source": "dynamic",
    }
    return schedule, event
