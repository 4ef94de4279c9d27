"""Rung training states: which one a promoted trial goes on from, and their lifetime.

In a multi-fidelity search (spec ``fidelity`` with ``resume``) a worker uploads the training state of
every rung below the top (``PUT /leases/{id}/checkpoint``, ``service.db.lease_checkpoints``); when
ASHA promotes that schedule, the promotion's job names the state (``Job.resume``) and its worker
fetches it (``GET /leases/{id}/checkpoint``) and trains only the steps the next rung adds. A lost
state costs nothing but time: the worker then trains the rung from the start. The states of a
search go when it ends.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ranktune.service.db.models import Lease, Trial, TrialCheckpoint
from ranktune.service.errors import Conflict, NotFound
from ranktune.service.schemas.spec import SearchCreate


def resumable(spec: SearchCreate) -> bool:
    """Whether the search's promotions go on from the rung below: plain LoRA, no re-allocation."""
    return bool(
        spec.fidelity and spec.fidelity.resume and spec.method.kind == "lora" and spec.dynamic is None
    )


def keeps_state(spec: SearchCreate, kind: str, rung: int) -> bool:
    """A proxy trial below the top rung uploads its state: ASHA may promote its schedule."""
    return (
        kind == "proxy" and resumable(spec) and spec.fidelity is not None and rung < spec.fidelity.rungs().top
    )


def _parent(session: Session, search_id: int, rung: int, config: int | None, seed: int) -> Any:
    """The rung below's trial of the same schedule and seed, with a stored state (None: none)."""
    if rung < 1 or config is None:
        return None
    same_schedule = Trial.number == config if rung == 1 else Trial.config == config
    return session.execute(
        select(Trial.id, TrialCheckpoint.steps)
        .join(TrialCheckpoint, TrialCheckpoint.trial_id == Trial.id)
        .where(
            Trial.search_id == search_id,
            Trial.kind == "proxy",
            Trial.rung == rung - 1,
            same_schedule,
            Trial.proxy_seed == seed,
            Trial.state == "succeeded",
        )
        .order_by(Trial.id)
        .limit(1)
    ).first()


def job_resume(
    session: Session,
    spec: SearchCreate,
    search_id: int,
    lease_id: str,
    trial: tuple[str, int, int | None, int],
) -> dict[str, Any] | None:
    """``Job.resume`` for a claimed trial (kind, rung, config, proxy seed): the state it goes on from."""
    kind, rung, config, seed = trial
    if kind != "proxy" or rung < 1 or not resumable(spec):
        return None
    parent = _parent(session, search_id, rung, config, seed)
    if parent is None:
        return None
    return {
        "steps": int(parent.steps),
        "trial_id": int(parent.id),
        "url": f"/api/v1/leases/{lease_id}/checkpoint",
    }


def checkpoint_for(session: Session, lease_id: str) -> tuple[int, bytes]:
    """The state an active lease's trial goes on from: (its steps, its bytes)."""
    row = session.execute(
        select(Lease.state, Trial.search_id, Trial.kind, Trial.rung, Trial.config, Trial.proxy_seed)
        .join(Trial, Trial.id == Lease.trial_id)
        .where(Lease.id == lease_id)
    ).first()
    if row is None:
        raise NotFound(f"lease_id: there is no lease {lease_id}", field="lease_id")
    if row.state != "active":
        raise Conflict(f"lease_id: lease {lease_id} is {row.state}", field="lease_id", where="path")
    parent = _parent(session, row.search_id, row.rung or 0, row.config, row.proxy_seed)
    if row.kind != "proxy" or parent is None:
        raise NotFound(f"lease_id: lease {lease_id}'s trial has no state to go on from", field="lease_id")
    data = session.scalar(select(TrialCheckpoint.data).where(TrialCheckpoint.trial_id == parent.id))
    if data is None:  # deleted since (the search ended)
        raise NotFound(f"lease_id: lease {lease_id}'s trial has no state to go on from", field="lease_id")
    return int(parent.steps), bytes(data)


def drop_checkpoints(session: Session, search_id: int) -> None:
    """Delete every rung state of a search (it ended: no promotion will need them)."""
    trial_ids = select(Trial.id).where(Trial.search_id == search_id)
    session.execute(delete(TrialCheckpoint).where(TrialCheckpoint.trial_id.in_(trial_ids)))
