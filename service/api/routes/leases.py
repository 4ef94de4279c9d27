"""The worker side: claim a trial, heartbeat, complete, fail (role: worker)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Body, Query, Response

from ranktune.service.api.deps import MetricsDep, SessionDep, SettingsDep, WorkerPrincipal
from ranktune.service.api.errors import errors
from ranktune.service.api.openapi import DocumentedRoute
from ranktune.service.api.params import LeaseId
from ranktune.service.api.routes.searches import trial_public
from ranktune.service.db import lease_adapters, lease_checkpoints, leases
from ranktune.service.db.repository import checkpoints
from ranktune.service.db.types import utcnow
from ranktune.service.schemas.common import INT32_MAX
from ranktune.service.schemas.leases import (
    AdapterStored,
    CheckpointStored,
    ClaimRequest,
    CompleteRequest,
    FailRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    Job,
    ResultResponse,
)

router = APIRouter(prefix="/leases", tags=["leases"], route_class=DocumentedRoute)


@router.post(
    "",
    response_model=Job,
    responses={204: {"description": "Nothing to do; ask again after Retry-After seconds"}},
)
def claim_lease(
    body: ClaimRequest, session: SessionDep, settings: SettingsDep, metrics: MetricsDep, _: WorkerPrincipal
) -> Job | Response:
    """Claim the next queued trial (searches take turns, by priority): 200 with the whole job, or 204
    with Retry-After when nothing is queued and no running search can take another trial now."""
    started = time.perf_counter()
    if settings.reap_interval_s <= 0:  # else the sweep thread reaps (service.lease_sweep)
        leases.reap_expired(session, utcnow())
    job = leases.claim(session, body.worker, settings.heartbeat_interval_s, utcnow())
    metrics.claim_latency.observe(time.perf_counter() - started)
    if job is None:
        return Response(status_code=204, headers={"Retry-After": str(settings.idle_retry_after_s)})
    return job


@router.post("/{lease_id}/heartbeat", responses=errors(404, 409))
def heartbeat(
    lease_id: LeaseId, body: HeartbeatRequest, session: SessionDep, _: WorkerPrincipal
) -> HeartbeatResponse:
    """Extend the lease and record progress; the answer says "continue" or "stop"."""
    return leases.heartbeat(session, lease_id, body, utcnow())


@router.post("/{lease_id}/complete", responses=errors(404, 409))
def complete(
    lease_id: LeaseId, body: CompleteRequest, session: SessionDep, _: WorkerPrincipal
) -> ResultResponse:
    """Deliver the attempt's result; repeating it for the same attempt changes nothing."""
    trial, search = leases.complete(session, lease_id, body, utcnow())
    return ResultResponse(trial=trial_public(trial, False), search_state=search.state)


@router.post("/{lease_id}/fail", responses=errors(404, 409))
def fail(lease_id: LeaseId, body: FailRequest, session: SessionDep, _: WorkerPrincipal) -> ResultResponse:
    """Report a failed attempt; a retryable one is queued again while attempts remain."""
    trial, search, requeued = leases.fail(session, lease_id, body, utcnow())
    return ResultResponse(trial=trial_public(trial, False), search_state=search.state, requeued=requeued)


ADAPTER_BODY = "adapter_config.json and adapter_model.safetensors, zipped"


@router.put("/{lease_id}/adapter", responses=errors(404, 409, 413))
def upload_adapter(
    lease_id: LeaseId,
    attempt: Annotated[int, Query(ge=0, le=INT32_MAX, description="The lease's attempt")],
    data: Annotated[bytes, Body(media_type="application/zip", description=ADAPTER_BODY)],
    session: SessionDep,
    settings: SettingsDep,
    _: WorkerPrincipal,
) -> AdapterStored:
    """Store a confirmation run's trained adapter, up to RANKTUNE_MAX_ADAPTER_BYTES; a resend replaces it.
    Send it before completing the attempt: the search exports its winner's weights."""
    stored = lease_adapters.store_adapter(
        session, lease_id, attempt, data, settings.max_adapter_bytes, utcnow()
    )
    return AdapterStored(
        trial_id=stored.trial_id, attempt=stored.attempt, size_bytes=stored.size_bytes, sha256=stored.sha256
    )


STATE_BODY = "the training state (trainer.resume.TrainState.to_bytes)"


@router.put("/{lease_id}/checkpoint", responses=errors(404, 409, 413))
def upload_checkpoint(
    lease_id: LeaseId,
    attempt: Annotated[int, Query(ge=0, le=INT32_MAX, description="The lease's attempt")],
    steps: Annotated[int, Query(ge=1, le=INT32_MAX, description="The optimizer steps the state holds")],
    data: Annotated[bytes, Body(media_type="application/octet-stream", description=STATE_BODY)],
    session: SessionDep,
    _: WorkerPrincipal,
) -> CheckpointStored:
    """Store a rung's training state (Job.keep_state), up to RANKTUNE_MAX_ADAPTER_BYTES; a resend
    replaces it. A promotion of the schedule goes on from it (Job.resume)."""
    stored = lease_checkpoints.store_checkpoint(session, lease_id, attempt, steps, data, utcnow())
    return CheckpointStored(trial_id=stored.trial_id, attempt=stored.attempt, steps=stored.steps,
                            size_bytes=stored.size_bytes, sha256=stored.sha256)  # fmt: skip


@router.get(
    "/{lease_id}/checkpoint",
    responses={
        **errors(404, 409),
        200: {"content": {"application/octet-stream": {}}, "description": STATE_BODY},
    },
    response_class=Response,
)
def download_checkpoint(lease_id: LeaseId, session: SessionDep, _: WorkerPrincipal) -> Response:
    """The training state an active lease's trial goes on from (Job.resume); 404 when there is none."""
    steps, data = checkpoints.checkpoint_for(session, lease_id)
    return Response(data, media_type="application/octet-stream", headers={"X-Ranktune-Steps": str(steps)})
