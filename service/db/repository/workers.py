"""Workers: recorded when they claim, listed for users."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ranktune.service.db.models import Base, Worker
from ranktune.service.schemas.leases import WorkerInfo

# Core table for the hot updates: an ORM-enabled UPDATE also builds its cache key and synchronizes the
# session's objects, several times the statement's own cost (bench/bench_leases.py profile).
WORKERS = Base.metadata.tables["workers"]


def upsert_worker(session: Session, info: WorkerInfo, now: datetime, current_trial_id: int | None) -> int:
    """Insert or refresh the worker named ``info.name``; returns its id. One statement, race-free."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    values = {
        "name": info.name,
        "device": info.device,
        "hostname": info.hostname,
        "last_seen": now,
        "current_trial_id": current_trial_id,
    }
    statement = insert(Worker).values(**values, trials_done=0, created_at=now)
    upsert = statement.on_conflict_do_update(
        index_elements=[Worker.name],
        set_={k: statement.excluded[k] for k in ("device", "hostname", "last_seen", "current_trial_id")},
    ).returning(Worker.id)
    return int(session.execute(upsert).scalar_one())


def worker_finished_trial(
    session: Session, worker_id: int | None, trial_id: int, done: bool, now: datetime
) -> None:
    """The worker no longer runs ``trial_id``; count it as done when it delivered a result."""
    if worker_id is None:
        return
    current = WORKERS.c.current_trial_id
    values: dict[str, object] = {
        "last_seen": now,
        "current_trial_id": case((current == trial_id, None), else_=current),
    }
    if done:
        values["trials_done"] = WORKERS.c.trials_done + 1
    session.execute(update(WORKERS).where(WORKERS.c.id == worker_id).values(**values))


def touch_worker(session: Session, worker_id: int | None, now: datetime) -> None:
    if worker_id is not None:
        session.execute(update(WORKERS).where(WORKERS.c.id == worker_id).values(last_seen=now))


def list_workers(session: Session) -> list[Worker]:
    return list(session.scalars(select(Worker).order_by(Worker.last_seen.desc(), Worker.id)))
