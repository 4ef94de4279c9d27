"""A rung's training state, received over its lease (``PUT /leases/{id}/checkpoint``); see
``service.db.repository.checkpoints`` for which promotion goes on from it."""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.orm import Session

from ranktune.service.db.engine import begin_write
from ranktune.service.db.leases import _lock
from ranktune.service.db.models import TrialCheckpoint
from ranktune.service.db.repository.checkpoints import keeps_state
from ranktune.service.errors import Conflict, InvalidInput
from ranktune.service.searching import stored_spec

log = logging.getLogger("ranktune.leases")


def store_checkpoint(
    session: Session, lease_id: str, attempt: int, steps: int, data: bytes, now: datetime
) -> TrialCheckpoint:
    """Keep a rung trial's training state; a resend replaces it. Only for a proxy trial below the
    top rung of a resumable search that is still running, and only for the trial's current attempt."""
    if not data:
        raise InvalidInput("body: the training state is empty", field="body")
    begin_write(session)
    locked = _lock(session, lease_id, attempt)
    search, trial, lease = locked.search, locked.trial, locked.lease
    spec = stored_spec(search.spec)
    if not keeps_state(spec, trial.kind, trial.rung or 0):
        raise Conflict(f"lease_id: trial {trial.id} is not a rung a promotion goes on from (a {trial.kind} "
                       f"trial at rung {trial.rung})", field="lease_id", where="path")  # fmt: skip
    if search.state != "running":
        raise Conflict(f"lease_id: search {search.id} is {search.state}", field="lease_id", where="path")
    if trial.attempt != lease.attempt or lease.state not in ("active", "expired", "completed"):
        raise Conflict(
            f"attempt: lease {lease_id} is {lease.state} and trial {trial.id} is on attempt {trial.attempt}",
            field="attempt",
            where="query",
        )
    expected = trial.steps if trial.steps is not None else spec.fidelity.rungs().steps(trial.rung)  # type: ignore[union-attr]
    if steps != expected:
        raise InvalidInput(f"steps: the state is at step {steps}, the trial trains {expected}", field="steps",
                           where="query")  # fmt: skip
    session.execute(delete(TrialCheckpoint).where(TrialCheckpoint.trial_id == trial.id))
    stored = TrialCheckpoint(trial_id=trial.id, attempt=attempt, steps=steps, size_bytes=len(data),
                             sha256=hashlib.sha256(data).hexdigest(), data=data, created_at=now)  # fmt: skip
    session.add(stored)
    session.commit()
    log.info("checkpoint stored (%d bytes)", len(data),
             extra={"action": "checkpoint", "search": search.id, "trial": trial.id})  # fmt: skip
    return stored
