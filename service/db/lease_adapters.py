"""A confirmation run's trained adapter, received over its lease (``PUT /leases/{id}/adapter``)."""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.orm import Session

from ranktune.service.db.engine import begin_write
from ranktune.service.db.leases import _lock
from ranktune.service.db.models import TrialAdapter
from ranktune.service.db.repository import adapters
from ranktune.service.errors import Conflict

log = logging.getLogger("ranktune.leases")


def store_adapter(
    session: Session, lease_id: str, attempt: int, data: bytes, max_bytes: int, now: datetime
) -> TrialAdapter:
    """Keep a confirmation run's trained adapter (a zip of PEFT's files); a resend replaces it.

    Taken while the attempt runs, and after it completed (a spooled upload resent late), but only
    for the attempt the trial is on, and once the search has chosen its winner only for the winner.
    """
    adapters.check_archive(data, max_bytes)
    begin_write(session)
    locked = _lock(session, lease_id, attempt)
    search, trial, lease = locked.search, locked.trial, locked.lease
    if trial.kind != "confirm":
        raise Conflict(f"lease_id: trial {trial.id} is a {trial.kind} trial; only confirmation runs keep "
                       "their adapter", field="lease_id", where="path")  # fmt: skip
    if trial.attempt != lease.attempt or lease.state not in ("active", "expired", "completed"):
        raise Conflict(
            f"attempt: lease {lease_id} is {lease.state} and trial {trial.id} is on attempt {trial.attempt}",
            field="attempt",
            where="query",
        )
    winner = adapters.winner_number(search)
    if search.state != "running" and winner != trial.confirms:
        raise Conflict(
            f"lease_id: search {search.id} is {search.state} and trial {trial.id} confirms no winner",
            field="lease_id",
            where="path",
        )
    session.execute(delete(TrialAdapter).where(TrialAdapter.trial_id == trial.id))
    stored = TrialAdapter(
        trial_id=trial.id,
        attempt=attempt,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        data=data,
        created_at=now,
    )
    session.add(stored)
    session.commit()
    log.info(
        "adapter stored (%d bytes)",
        len(data),
        extra={"action": "adapter", "search": search.id, "trial": trial.id},
    )
    return stored
