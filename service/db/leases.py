"""The lease protocol, as named operations over SQL: claim, heartbeat, complete, fail, reap.

- claim: PostgreSQL runs one ``UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED) RETURNING``;
  SQLite a compare-and-set ``UPDATE … WHERE id = :id AND state = 'queued'`` inside a write
  transaction. Either way a queued trial goes to exactly one worker, the next in the fair-share
  order between searches (``fair_share``).
- A trial's ``attempt`` counts its claims; a lease belongs to one attempt. Results for another
  attempt are stale (409); a repeated result for the lease's own attempt changes nothing (200).
- An expired lease puts its trial back in the queue until ``max_attempts``, then fails it.
- Lock order, to stay deadlock-free on PostgreSQL: search, trial, lease, worker.
- A result (complete, fail) locks its trial and lease only, never the search row: 64 workers of one
  search would otherwise queue on that row (measured: complete p50 1.4 s, and the claims and heartbeats
  waiting behind them for connections). Proposing the trial that takes the freed slot is a second,
  non-blocking transaction (``refill.after_result``); the queue filler does what it skips.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session, load_only

from ranktune.service import engine
from ranktune.service.db.engine import begin_write
from ranktune.service.db.models import Base, Lease, Search, Trial
from ranktune.service.db.reaping import reap_expired
from ranktune.service.db.repository import checkpoints, refill
from ranktune.service.db.repository.searches import lock_search
from ranktune.service.db.repository.trials import top_up
from ranktune.service.db.repository.workers import touch_worker, upsert_worker, worker_finished_trial
from ranktune.service.errors import Conflict, InvalidInput, NotFound
from ranktune.service.schemas.leases import (
    CompleteRequest,
    FailRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    Job,
    MeasurementIn,
    WorkerInfo,
)
from ranktune.service.searching import stored_spec

log = logging.getLogger("ranktune.leases")
__all__ = ["claim", "complete", "fail", "heartbeat", "reap_expired"]
TRIALS = Base.metadata.tables["trials"]  # Core table: claims are plain SQL, no ORM bookkeeping
LEASES = Base.metadata.tables["leases"]
MEASUREMENTS = Base.metadata.tables["measurements"]
_CLAIM_RETRIES = 5
_FAIR_ORDER = (TRIALS.c.claim_order, TRIALS.c.id)  # service.db.fair_share; index ix_trials_claim
RESULT_PROPOSALS = 1  # a result frees one slot and proposes its trial; repository.refill does the rest


_CLAIMED = (
    TRIALS.c.id,
    TRIALS.c.search_id,
    TRIALS.c.number,
    TRIALS.c.attempt,
    TRIALS.c.schedule,
    TRIALS.c.proxy_seed,
    TRIALS.c.kind,
    TRIALS.c.steps,
    TRIALS.c.rung,
    TRIALS.c.config,
)


def _claim_values(worker: WorkerInfo, now: datetime) -> dict[str, object]:
    return {
        "state": "running",
        "attempt": TRIALS.c.attempt + 1,
        "worker_name": worker.name,
        "started_at": now,
        "step": None,
        "total_steps": None,
        "timeline": None,  # a re-allocation of an earlier attempt does not carry over
    }


def _claim_postgresql(session: Session, worker: WorkerInfo, now: datetime) -> Row | None:
    next_queued = (
        select(TRIALS.c.id)
        .where(TRIALS.c.state == "queued")
        .order_by(*_FAIR_ORDER)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    # UPDATE … FROM searches: the job's search fields come back in the same round trip (the
    # search row is read, not locked).
    statement = (
        update(TRIALS)
        .where(TRIALS.c.id == next_queued, Search.id == TRIALS.c.search_id)
        .values(**_claim_values(worker, now))
        .returning(*_CLAIMED, Search.spec, Search.lease_ttl_s)
    )
    return session.execute(statement).first()


def _claim_sqlite(session: Session, worker: WorkerInfo, now: datetime) -> tuple[Any, ...] | None:
    for _ in range(_CLAIM_RETRIES):
        trial_id = session.scalar(
            select(TRIALS.c.id).where(TRIALS.c.state == "queued").order_by(*_FAIR_ORDER).limit(1)
        )
        if trial_id is None:
            return None
        statement = (
            update(TRIALS)
            .where(TRIALS.c.id == trial_id, TRIALS.c.state == "queued")
            .values(**_claim_values(worker, now))
            .returning(*_CLAIMED)
        )
        row = session.execute(statement).first()
        if row is not None:
            # SQLite's RETURNING cannot name the table of UPDATE … FROM; a read is cheap in-process.
            search = session.execute(
                select(Search.spec, Search.lease_ttl_s).where(Search.id == row.search_id)
            ).one()
            return (*row, *search)
    return None


def claim(session: Session, worker: WorkerInfo, heartbeat_interval_s: float, now: datetime) -> Job | None:
    """Give the next queued trial in fair-share order to ``worker``; when nothing is queued, first
    propose one for a running search that has room (``refill.fill_for_claim``); None: no work."""
    job = _claim(session, worker, heartbeat_interval_s, now)
    if job is None and refill.fill_for_claim(session, now):
        job = _claim(session, worker, heartbeat_interval_s, now)
    return job


def _claim(session: Session, worker: WorkerInfo, heartbeat_interval_s: float, now: datetime) -> Job | None:
    begin_write(session)
    row: Sequence[Any] | None
    if session.get_bind().dialect.name == "postgresql":
        row = _claim_postgresql(session, worker, now)
    else:
        row = _claim_sqlite(session, worker, now)
    if row is None:
        upsert_worker(session, worker, now, current_trial_id=None)
        session.commit()
        return None
    (trial_id, search_id, number, attempt, schedule, proxy_seed, kind, steps, rung, config, search_spec,
     lease_ttl_s) = row  # fmt: skip
    lease_id, expires_at = str(uuid.uuid4()), now + timedelta(seconds=lease_ttl_s)
    worker_id = upsert_worker(session, worker, now, current_trial_id=trial_id)
    # Core, not an ORM object: nothing reads the lease back in this transaction.
    session.execute(
        insert(LEASES).values(
            id=lease_id,
            trial_id=trial_id,
            attempt=attempt,
            worker_id=worker_id,
            state="active",
            created_at=now,
            expires_at=expires_at,
        )
    )
    spec = stored_spec(search_spec)  # memoized: the spec never changes after submission
    job = Job(
        lease_id=lease_id,
        trial_id=trial_id,
        search_id=search_id,
        trial_number=number,
        attempt=attempt,
        model=spec.model,
        task=spec.task,
        method=spec.method.model_dump(mode="json"),
        schedule=schedule,
        kind=kind,
        eval_split="test" if kind == "confirm" else "val",
        proxy=engine.job_proxy(spec, kind, proxy_seed, steps),
        dynamic=engine.job_dynamic(spec, kind),
        objective=spec.objective.model_dump(mode="json"),
        upload_adapter=kind == "confirm",
        keep_state=checkpoints.keeps_state(spec, kind, rung or 0),
        resume=checkpoints.job_resume(
            session, spec, search_id, lease_id, (kind, rung or 0, config, proxy_seed)
        ),
        heartbeat_interval_s=min(heartbeat_interval_s, lease_ttl_s / 3),
        expires_at=expires_at,
    )
    session.commit()
    log.info(
        "claimed attempt %d",
        attempt,
        extra={"action": "claim", "search": search_id, "trial": trial_id, "worker": worker.name},
    )
    return job


# Built once: a statement's cache key (SQLAlchemy's compiled-statement cache) is memoized on the
# statement object, and computing it for this three-table join on every heartbeat was 5% of the
# server's CPU under load (bench/bench_leases.py --profile).
_HEARTBEAT_READ = (
    select(Lease.trial_id, Lease.attempt, Lease.state, Lease.worker_id)
    .add_columns(Trial.state, Trial.attempt, Search.id, Search.state, Search.lease_ttl_s)
    .join(Trial, Trial.id == Lease.trial_id)
    .join(Search, Search.id == Trial.search_id)
    .where(Lease.id == bindparam("lease_id"))
)
_RESULT_READ = (
    select(Lease.trial_id, Trial.search_id)
    .join(Trial, Trial.id == Lease.trial_id)
    .where(Lease.id == bindparam("lease_id"))
)


@dataclass
class _Locked:
    search: Search
    trial: Trial
    lease: Lease


def _lock(session: Session, lease_id: str, attempt: int, search_too: bool = True) -> _Locked:
    """Lease, trial and (with ``search_too``) search of ``lease_id``, locked in the global order;
    checks the attempt. Without ``search_too`` the search row is read, not locked."""
    found = session.execute(_RESULT_READ, {"lease_id": lease_id}).first()
    if found is None:
        raise NotFound(f"lease_id: there is no lease {lease_id}", field="lease_id")
    trial_id, search_id = found
    if search_too:
        search = lock_search(session, search_id)
    else:
        columns = load_only(Search.id, Search.state, Search.objective_metric)  # not the JSON columns
        query = select(Search).where(Search.id == search_id).options(columns)
        search = session.scalars(query.execution_options(populate_existing=True)).one()
    trial = session.scalars(
        select(Trial).where(Trial.id == trial_id).with_for_update().execution_options(populate_existing=True)
    ).one()
    lease = session.scalars(
        select(Lease).where(Lease.id == lease_id).with_for_update().execution_options(populate_existing=True)
    ).one()
    if attempt != lease.attempt:
        raise Conflict(
            f"attempt: lease {lease_id} belongs to attempt {lease.attempt}, not {attempt}", field="attempt"
        )
    return _Locked(search, trial, lease)


def _require_current(locked: _Locked) -> None:
    """A result is accepted for the trial's latest attempt while it runs, or after its lease
    expired if no other worker has claimed it since (the work is done; keep it)."""
    trial, lease = locked.trial, locked.lease
    if trial.attempt != lease.attempt:
        raise Conflict(
            f"attempt: {lease.attempt} is stale; trial {trial.id} is on attempt {trial.attempt}",
            field="attempt",
        )
    if trial.state not in ("running", "queued") or lease.state not in ("active", "expired"):
        raise Conflict(
            f"attempt: trial {trial.id} is {trial.state} and lease {lease.id} is {lease.state}; "
            "it takes no more results",
            field="attempt",
        )


def heartbeat(session: Session, lease_id: str, body: HeartbeatRequest, now: datetime) -> HeartbeatResponse:
    """Extend a live lease and store progress; answer "stop" when the attempt should end.

    The hot path is one read and conditional updates (trial, then lease: the global lock order);
    a cancel or reap that lands in between makes an update match nothing, and the re-read says stop.
    """
    begin_write(session)
    found = session.execute(_HEARTBEAT_READ, {"lease_id": lease_id}).first()
    if found is None:
        raise NotFound(f"lease_id: there is no lease {lease_id}", field="lease_id")
    trial_id, attempt, lease_state, worker_id, trial_state, trial_attempt, search_id, search_state, ttl = (
        found
    )
    if body.attempt != attempt:
        raise Conflict(
            f"attempt: lease {lease_id} belongs to attempt {attempt}, not {body.attempt}", field="attempt"
        )
    reason = None
    if search_state == "cancelled":
        reason = "search cancelled"
    elif lease_state != "active":
        reason = f"lease is {lease_state}"
    elif trial_state != "running" or trial_attempt != attempt:
        reason = f"trial is {trial_state} on attempt {trial_attempt}"
    if reason is None:
        progress: dict[str, object] = {"step": body.step}
        if body.total_steps is not None:
            progress["total_steps"] = body.total_steps
        if body.site_stats is not None:
            progress["site_stats"] = body.site_stats
        running = session.scalar(
            update(TRIALS)
            .where(TRIALS.c.id == trial_id, TRIALS.c.state == "running", TRIALS.c.attempt == attempt)
            .values(**progress)
            .returning(TRIALS.c.id)
        )
        expires_at = session.scalar(
            update(LEASES)
            .where(LEASES.c.id == lease_id, LEASES.c.state == "active")
            .values(expires_at=now + timedelta(seconds=ttl))
            .returning(LEASES.c.expires_at)
        )
        if running is None or expires_at is None:
            session.rollback()  # cancelled or reaped in between: read again, which now says stop
            return heartbeat(session, lease_id, body, now)
        _store_measurements(session, trial_id, attempt, body.measurements, now)
        touch_worker(session, worker_id, now)
        session.commit()
        if body.site_stats is not None or any(m.metric is not None for m in body.measurements):
            answer = _engine_step(session, lease_id, body, now)
            if answer is not None:
                return answer
        return HeartbeatResponse(action="continue", expires_at=expires_at)
    session.execute(
        update(Lease)
        .where(Lease.id == lease_id, Lease.state == "active")
        .values(state="stopped", ended_at=now)
        .execution_options(synchronize_session=False)
    )
    worker_finished_trial(session, worker_id, trial_id, done=False, now=now)
    session.commit()
    log.info(reason, extra={"action": "stop", "search": search_id, "trial": trial_id})
    return HeartbeatResponse(action="stop", expires_at=None, reason=reason)


def _engine_step(
    session: Session, lease_id: str, body: HeartbeatRequest, now: datetime
) -> HeartbeatResponse | None:
    """Dynamic re-allocation or pruning for a running proxy trial; None: carry on as before.

    A second transaction after the hot path: it locks search, trial and lease in the global order,
    which the hot path (trial, lease only) must not do.
    """
    begin_write(session)
    locked = _lock(session, lease_id, body.attempt)
    search, trial, lease = locked.search, locked.trial, locked.lease
    live = trial.state == "running" and trial.attempt == lease.attempt and lease.state == "active"
    if not live or trial.kind != "proxy":
        session.rollback()
        return None
    spec = stored_spec(search.spec)
    if body.site_stats is not None:
        change = engine.reallocation(session, search, spec, trial, body.site_stats, body.step)
        if change is not None:
            schedule, event = change
            trial.timeline = [*(trial.timeline or []), event]
            expires_at = lease.expires_at
            session.commit()
            log.info(
                "re-allocated at step %d: %s",
                body.step,
                event["reason"],
                extra={"action": "resize", "search": search.id, "trial": trial.id},
            )
            return HeartbeatResponse(
                action="resize", expires_at=expires_at, schedule=schedule.to_json(), reason=event["reason"]
            )
    reason = engine.prune_reason(session, search, spec, trial)
    if reason is None:
        session.rollback()
        return None
    trial.state, trial.reason, trial.finished_at = "pruned", reason, now
    trial.objective = engine.last_value(session, trial)
    lease.state, lease.ended_at = "stopped", now
    worker_finished_trial(session, lease.worker_id, trial.id, done=False, now=now)
    top_up(session, search, now, limit=RESULT_PROPOSALS)
    session.commit()
    log.info(reason, extra={"action": "prune", "search": search.id, "trial": trial.id})
    return HeartbeatResponse(action="stop", expires_at=None, reason=reason)


def _store_measurements(
    session: Session, trial_id: int, attempt: int, measurements: list[MeasurementIn], now: datetime
) -> None:
    """Insert the measurements whose step is new for this attempt (a resent heartbeat adds nothing)."""
    if not measurements:
        return
    fresh = {m.step: m for m in measurements}  # the last of repeated steps wins
    rows = [
        {"trial_id": trial_id, "attempt": attempt, "step": m.step, "loss": m.loss, "metric": m.metric,
         "created_at": now}
        for m in fresh.values()
    ]  # fmt: skip
    # One statement: steps stored before (a resent heartbeat) hit the unique (trial, attempt, step).
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(MEASUREMENTS).values(rows)
    session.execute(statement.on_conflict_do_nothing(index_elements=["trial_id", "attempt", "step"]))


def complete(session: Session, lease_id: str, body: CompleteRequest, now: datetime) -> tuple[Trial, Search]:
    """Record a trial's result; idempotent for the lease's own attempt. The freed slot's proposal
    (or the search's confirmation or end) follows in a transaction of its own."""
    begin_write(session)
    locked = _lock(session, lease_id, body.attempt, search_too=False)
    search, trial, lease = locked.search, locked.trial, locked.lease
    metric = search.objective_metric
    if metric not in body.metrics:
        raise InvalidInput(
            f"metrics.{metric}: the objective metric is missing",
            field=f"metrics.{metric}",
            loc=("metrics", metric),
        )
    if lease.state == "completed":
        session.rollback()
        return trial, search
    _require_current(locked)
    if body.resumed_from is not None and trial.steps is not None and body.resumed_from >= trial.steps:
        raise InvalidInput(f"resumed_from: {body.resumed_from} is not below the trial's {trial.steps} steps",
                           field="resumed_from")  # fmt: skip
    trial.state = "succeeded"
    trial.objective = body.metrics[metric]
    trial.metrics = dict(body.metrics)
    trial.curve = [m.model_dump() for m in body.curve]
    trial.timeline = trial.timeline or list(body.timeline)  # the server's carries re-allocation reasons
    trial.outcomes = body.outcomes
    trial.trainable_params = body.trainable_params
    trial.adapter_params = body.adapter_params
    trial.exported_params = body.exported_params
    trial.resumed_from = body.resumed_from
    trial.wall_time_s = body.wall_time_s
    trial.peak_memory_bytes = body.peak_memory_bytes
    trial.device = body.device
    trial.reason = None
    trial.finished_at = now
    lease.state, lease.ended_at = "completed", now
    worker_finished_trial(session, lease.worker_id, trial.id, done=True, now=now)
    session.commit()
    log.info(
        "%s=%g",
        metric,
        trial.objective,
        extra={"action": "complete", "search": search.id, "trial": trial.id, "worker": trial.worker_name},
    )
    return trial, refill.after_result(session, search, now, RESULT_PROPOSALS)


def fail(session: Session, lease_id: str, body: FailRequest, now: datetime) -> tuple[Trial, Search, bool]:
    """Record a failed attempt: requeue it when retryable and attempts remain, else fail the trial."""
    begin_write(session)
    locked = _lock(session, lease_id, body.attempt, search_too=False)
    search, trial, lease = locked.search, locked.trial, locked.lease
    if lease.state == "failed":
        session.rollback()
        return trial, search, trial.state == "queued"
    _require_current(locked)
    requeue = body.retryable and trial.attempt < trial.max_attempts
    trial.reason = body.reason
    if requeue:
        trial.state, trial.step, trial.worker_name = "queued", None, None
    else:
        trial.state, trial.finished_at = "failed", now
    lease.state, lease.ended_at = "failed", now
    worker_finished_trial(session, lease.worker_id, trial.id, done=False, now=now)
    session.commit()
    log.info(
        "attempt %d failed (%s): %s",
        lease.attempt,
        "requeued" if requeue else "final",
        body.reason,
        extra={"action": "fail", "search": search.id, "trial": trial.id, "worker": trial.worker_name},
    )
    if requeue:  # its slot is taken again by the trial itself: nothing to propose or finish
        return trial, search, requeue
    return trial, refill.after_result(session, search, now, RESULT_PROPOSALS), requeue
