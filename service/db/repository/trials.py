"""Trials of a search: reading them, and keeping a running search supplied with queued trials.

``top_up`` and ``finish_if_done`` run with the search row locked (``searches.lock_search``) inside
the caller's transaction, so API replicas that complete trials of one search at the same moment
never create more than ``parallelism`` active or ``max_trials`` total trials, and never propose two
trials for one number. Proposing costs CPU with that lock held (TPE's grows with the trials queued),
so a request proposes a bounded number (``limit``); ``repository.refill`` proposes the rest.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ranktune.search import confirm, probe
from ranktune.search.confirm import ConfirmRun
from ranktune.search.errors import ScheduleError
from ranktune.search.paired import OutcomesError, decode_outcomes
from ranktune.search.schedule import RankSchedule
from ranktune.search.strategies import PriorTrial, TrialRecord, get_proposer, propose_next
from ranktune.service.db import fair_share
from ranktune.service.db.models import Search, Trial
from ranktune.service.db.repository import adapters, checkpoints
from ranktune.service.errors import NotFound
from ranktune.service.schemas.searches import TrialCounts
from ranktune.service.schemas.spec import SearchCreate
from ranktune.service.searching import search_context, stored_space, stored_spec

log = logging.getLogger("ranktune.trials")


def trial_counts(session: Session, search_id: int) -> TrialCounts:
    rows = session.execute(
        select(Trial.state, func.count()).where(Trial.search_id == search_id).group_by(Trial.state)
    ).all()
    return TrialCounts(**{state: count for state, count in rows})


def list_trials(
    session: Session, search_id: int, state: str | None = None, limit: int = 1000, offset: int = 0
) -> list[Trial]:
    query = select(Trial).where(Trial.search_id == search_id)
    if state is not None:
        query = query.where(Trial.state == state)
    return list(session.scalars(query.order_by(Trial.number).limit(limit).offset(offset)))


def get_trial(session: Session, trial_id: int) -> Trial:
    trial = session.get(Trial, trial_id)
    if trial is None:
        raise NotFound(f"trial_id: there is no trial {trial_id}", field="trial_id")
    return trial


def best_trial(session: Session, search: Search) -> Trial | None:
    """The succeeded trial with the best objective, at the highest rung any reached (multi-fidelity:
    objectives of other lengths do not compare); ties go to the earlier trial."""
    order = Trial.objective.desc() if search.objective_direction == "maximize" else Trial.objective.asc()
    query = (
        select(Trial)
        .where(
            Trial.search_id == search.id,
            Trial.kind == "proxy",
            Trial.state == "succeeded",
            Trial.objective.is_not(None),
        )
        .order_by(Trial.rung.desc(), order, Trial.number)
        .limit(1)
    )
    return session.scalars(query).first()


def best_objective(session: Session, search: Search) -> float | None:
    """The confirmed winner's mean once confirmed, else the best succeeded proxy trial's objective."""
    if search.result and search.result.get("winner"):
        return float(search.result["winner"]["mean"])
    best = best_trial(session, search)
    return best.objective if best else None


def final_schedule(schedule: dict[str, Any], timeline: list[Any] | None) -> RankSchedule:
    """The schedule a trial ended with: the last re-allocation of its timeline, else its own."""
    for event in reversed(timeline or []):
        if isinstance(event, dict) and isinstance(event.get("schedule"), dict):
            return RankSchedule.from_json(event["schedule"])
    return RankSchedule.from_json(schedule)


def trial_record(trial: Trial) -> TrialRecord:
    return TrialRecord(
        number=trial.number,
        state=trial.state,  # type: ignore[arg-type]
        schedule=final_schedule(trial.schedule, trial.timeline),
        proxy_seed=trial.proxy_seed,
        objective=trial.objective,
        metrics=dict(trial.metrics or {}),
        vector=tuple(trial.vector) if trial.vector else None,
        rung=trial.rung or 0,
        config=trial.config,
        steps=trial.steps,
    )


def trial_records(session: Session, search_id: int, kind: str = "proxy") -> tuple[TrialRecord, ...]:
    query = select(Trial).where(Trial.search_id == search_id, Trial.kind == kind).order_by(Trial.number)
    return tuple(trial_record(t) for t in session.scalars(query))


def top_up(
    session: Session, search: Search, now: datetime, limit: int | None = None, until: float | None = None
) -> list[Trial]:
    """Queue new trials until ``parallelism`` are queued or running: the ``max_trials`` proxy trials
    first, then (with ``confirm``) the confirmation runs once every proxy trial is terminal; finish the
    search when every trial it will ever have is terminal.

    ``limit`` caps the proxy trials proposed in this call, and after the first one none is proposed
    past ``until`` (``time.monotonic()``); confirmation runs need no proposals and are not capped."""
    if search.state != "running":
        return []
    counts = trial_counts(session, search.id)
    active = counts.queued + counts.running
    room = search.parallelism - active
    spec = stored_spec(search.spec)
    if search.trials_created < search.max_trials:
        count = min(room, search.max_trials - search.trials_created)
        return _queue_proxies(
            session, search, spec, count if limit is None else min(count, limit), now, until
        )
    if active > 0 and search.trials_created == search.max_trials:
        return []  # confirmation (and its rechecks) wait for the last proxy trial: it ranks them all
    rechecks = _recheck_plan(session, search, spec)
    done = search.trials_created - search.max_trials
    if done < len(rechecks):
        return _queue_rechecks(session, search, spec, rechecks[done : done + max(room, 0)], now)
    done -= len(rechecks)
    if active > 0 and done == 0 and rechecks:
        return []  # the confirmation plan ranks by the rechecks' means: it waits for the last one
    runs = _confirm_plan(session, search, spec)
    if done >= len(runs):
        if active == 0:
            finish(session, search, now, confirmed=bool(runs))
        return []
    created = []
    order = fair_share.virtual_time(session) if room > 0 else 0.0
    for run in runs[done : done + max(room, 0)]:
        created.append(
            _add_trial(
                session, search, spec, order, "confirm", run.schedule, run.seed, now, confirms=run.confirms
            )
        )
    session.flush()
    log.info("queued %d confirmation run(s)", len(created), extra={"action": "top_up", "search": search.id})
    return created


def _recheck_plan(session: Session, search: Search, spec: SearchCreate) -> list[TrialRecord]:
    """The proxy trials ``confirm.recheck`` re-runs with another seed, from the search's own proxy
    trials (not the rechecks: the plan stays the same while they run)."""
    if spec.confirm is None or spec.confirm.rechecks() == 0:
        return []
    own = [t for t in trial_records(session, search.id) if t.number < search.max_trials]
    return confirm.recheck_plan(own, spec.confirm.rechecks(), spec.objective.direction)


def _queue_rechecks(
    session: Session, search: Search, spec: SearchCreate, rechecks: list[TrialRecord], now: datetime
) -> list[Trial]:
    if not rechecks:  # no room until a running trial ends
        return []
    order = fair_share.virtual_time(session)
    created = []
    for r in rechecks:  # the same rung, length and config as the trial it re-runs
        config = r.number if r.config is None else r.config
        created.append(_add_trial(session, search, spec, order, "proxy", r.schedule, r.proxy_seed, now,
                                  vector=r.vector, rung=r.rung, config=config, steps=r.steps))  # fmt: skip
    session.flush()
    log.info("queued %d recheck(s)", len(created), extra={"action": "top_up", "search": search.id})
    return created


def _confirm_plan(session: Session, search: Search, spec: SearchCreate) -> list[ConfirmRun]:
    if spec.confirm is None:
        return []
    uniform = session.scalar(
        select(Trial.schedule).where(Trial.search_id == search.id, Trial.kind == "proxy", Trial.number == 0)
    )
    if uniform is None:
        return []
    return confirm.plan(
        trial_records(session, search.id),
        RankSchedule.from_json(uniform),
        spec.confirm.top_k,
        spec.confirm.seeds,
        spec.objective.direction,
        spec.proxy.seed,
    )


def _add_trial(
    session: Session,
    search: Search,
    spec: SearchCreate,
    virtual_time: float,
    kind: str,
    schedule: RankSchedule,
    seed: int,
    now: datetime,
    vector: tuple[float, ...] | None = None,
    predicted: float | None = None,
    confirms: int | None = None,
    rung: int = 0,
    config: int | None = None,
    steps: int | None = None,
) -> Trial:
    trial = Trial(
        search_id=search.id,
        number=search.trials_created,
        kind=kind,
        state="queued",
        schedule=schedule.to_json(),
        vector=list(vector) if vector is not None else None,
        predicted=predicted,
        confirms=confirms,
        rung=rung,
        config=config,
        steps=steps,
        parameter_count=schedule.parameter_count,
        proxy_seed=seed,
        attempt=0,
        max_attempts=search.max_attempts,
        claim_order=fair_share.place(search, spec.priority, virtual_time),
        created_at=now,
    )
    session.add(trial)
    search.trials_created += 1
    return trial


def _queue_proxies(
    session: Session, search: Search, spec: SearchCreate, room: int, now: datetime, until: float | None
) -> list[Trial]:
    if room <= 0:
        return []
    proposer = get_proposer(search.strategy)
    # Promotions, the probe's allocation and screening read the history whatever the strategy; transferred
    # trials only serve a model.
    needs_history = (
        proposer.uses_history or spec.fidelity is not None or spec.probe is not None or bool(spec.screen)
    )
    history = trial_records(session, search.id) if needs_history else ()
    prior = (
        prior_trials(session, search, spec)
        if proposer.uses_history and spec.performance_model.transfer and spec.fidelity is None
        else ()
    )
    space = stored_space(search.spec, search.sites)
    context = search_context(spec, space, prior)
    if spec.probe is not None:
        context = replace(context, importance=probe_importance(session, search))
    order = fair_share.virtual_time(session)
    created: list[Trial] = []
    for _ in range(room):
        if created and until is not None and time.monotonic() >= until:
            break
        number = search.trials_created
        if number == PROBE_NUMBER and spec.probe is not None:
            schedule = probe.probe_schedule(space)
            steps = spec.probe.length(spec)
            created.append(_add_trial(session, search, spec, order, "probe", schedule, spec.proxy.seed, now,
                                      steps=steps))  # fmt: skip
            continue
        proposal = propose_next(proposer, context, number, history)
        created.append(
            _add_trial(
                session,
                search,
                spec,
                order,
                "proxy",
                proposal.schedule,
                proposal.proxy_seed,
                now,
                vector=proposal.vector,
                predicted=proposal.predicted,
                rung=proposal.rung,
                config=proposal.config,
                steps=proposal.steps,
            )
        )
        if proposal.quality is not None:
            search.performance_model = {**proposal.quality.to_json(), "fitted_at": now.isoformat()}
        if needs_history:
            record = TrialRecord(
                number,
                "queued",
                proposal.schedule,
                proposal.proxy_seed,
                vector=proposal.vector,
                rung=proposal.rung,
                config=proposal.config,
                steps=proposal.steps,
            )
            history = (*history, record)
    session.flush()
    log.info("queued %d trial(s)", len(created), extra={"action": "top_up", "search": search.id})
    return created


PROBE_NUMBER = 1  # the importance probe is leased right after the uniform baseline (trial 0)


def probe_importance(session: Session, search: Search) -> dict[str, float] | None:
    """Site → importance per unit of rank from the search's finished probe; None without one."""
    row = session.execute(  # by (search_id, number): the unique index, whatever the search's size
        select(Trial.schedule, Trial.site_stats).where(
            Trial.search_id == search.id,
            Trial.number == PROBE_NUMBER,
            Trial.kind == "probe",
            Trial.state == "succeeded",
        )
    ).first()
    if row is None or not isinstance(row.site_stats, dict):
        return None
    try:
        return probe.site_importance(RankSchedule.from_json(row.schedule), row.site_stats)
    except (ScheduleError, TypeError, ValueError):
        return None  # statistics that do not fit the schedule: the search goes on without them


PRIOR_LIMIT = 2_000  # transferred trials per search, most recent first


def prior_trials(session: Session, search: Search, spec: SearchCreate) -> tuple[PriorTrial, ...]:
    """Succeeded proxy trials of earlier searches on the same model, task, method and objective,
    with each one's uniform baseline (trial 0) so gains compare across searches."""
    same = [
        s_id
        for s_id, s_spec in session.execute(select(Search.id, Search.spec).where(Search.id < search.id))
        if s_spec.get("model") == spec.model
        and s_spec.get("task") == spec.task
        and (s_spec.get("method") or {}).get("kind") == spec.method.kind
        and (s_spec.get("objective") or {}) == spec.objective.model_dump(mode="json")
    ]
    if not same:
        return ()
    rows = session.execute(
        select(Trial.search_id, Trial.number, Trial.objective, Trial.schedule, Trial.timeline)
        .where(
            Trial.search_id.in_(same),
            Trial.kind == "proxy",
            Trial.rung == 0,  # a multi-fidelity search's promotions repeat its schedules
            Trial.state == "succeeded",
            Trial.objective.is_not(None),
        )
        .order_by(Trial.search_id.desc(), Trial.number)
    ).all()
    baselines = {r.search_id: r.objective for r in rows if r.number == 0}
    prior = []
    for row in rows:
        baseline = baselines.get(row.search_id)
        if baseline is None or row.number == 0:
            continue
        schedule = final_schedule(row.schedule, row.timeline)
        prior.append(PriorTrial(schedule, float(row.objective), float(baseline)))
        if len(prior) >= PRIOR_LIMIT:
            break
    return tuple(prior)


def _outcomes(text: str | None) -> np.ndarray | None:
    """Stored outcomes, or None (absent, or unreadable: a result is then paired by seed only)."""
    try:
        return decode_outcomes(text) if text else None
    except OutcomesError:
        return None


# A search's reason quotes at most this much of its trials' most common error.
REASON_QUOTE_CHARS = 500


def failure_reason(session: Session, search_id: int) -> str:
    """Why a search with no successful trial failed: its trials' most common error, and how common.

    Errors are compared on their first line (a traceback's last line, a worker's one-line reason),
    so runs that failed the same way with different details count together.
    """
    rows = session.execute(
        select(Trial.reason, func.count())
        .where(Trial.search_id == search_id, Trial.state == "failed")
        .group_by(Trial.reason)
    ).all()
    counts: dict[str, int] = {}
    for text, n in rows:
        first = (text or "").strip().splitlines()[0].strip() if (text or "").strip() else ""
        counts[first] = counts.get(first, 0) + int(n)
    total = sum(counts.values())
    named = {k: n for k, n in counts.items() if k}
    if not named:
        return "no trial succeeded"
    common, n = max(named.items(), key=lambda item: (item[1], item[0]))
    if len(common) > REASON_QUOTE_CHARS:
        common = common[: REASON_QUOTE_CHARS - 1] + "…"
    return f"no trial succeeded; most common error ({n} of {total} failed trials): {common}"


def finish(session: Session, search: Search, now: datetime, confirmed: bool = False) -> None:
    best = best_trial(session, search)
    search.finished_at = now
    if confirmed:
        rows = session.execute(
            select(Trial.confirms, Trial.proxy_seed, Trial.objective, Trial.state, Trial.outcomes).where(
                Trial.search_id == search.id, Trial.kind == "confirm"
            )
        ).all()
        runs = [
            confirm.ConfirmResult(int(c), int(seed), o if st == "succeeded" else None, _outcomes(text))
            for c, seed, o, st, text in rows
            if c is not None
        ]
        result = confirm.summarize(runs, search.objective_direction)  # type: ignore[arg-type]
        search.result = result
        if result is not None:
            winner = session.scalar(
                select(Trial).where(
                    Trial.search_id == search.id,
                    Trial.kind == "proxy",
                    Trial.number == result["winner"]["trial_number"],
                )
            )
            best = winner or best
        adapters.keep_winner_only(session, search)
    checkpoints.drop_checkpoints(session, search.id)
    if best is None:
        search.state = "failed"
        search.reason = failure_reason(session, search.id)
    else:
        search.state = "finished"
        search.best_trial_id = best.id
    log.info(
        "search %s",
        search.state,
        extra={"action": "finish", "search": search.id, "trial": search.best_trial_id},
    )
