"""The lease protocol on SQLite and PostgreSQL: claim, heartbeat, complete, fail, expiry."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from ranktune.search.schedule import RankSchedule
from ranktune.service.db import leases
from ranktune.service.db.models import Lease, Measurement, Trial
from ranktune.service.db.types import utcnow
from tests.service.api import SPEC, Api


def claim(api: Api, worker: str = "gpu-0") -> dict[str, Any]:
    job = api.claim(worker)
    assert job is not None
    return job


def reap(api: Api, seconds_ahead: float) -> int:
    with api.session() as session:
        return leases.reap_expired(session, utcnow() + timedelta(seconds=seconds_ahead))


def trial_row(api: Api, trial_id: int) -> Trial:
    with api.session() as session:
        trial = session.get(Trial, trial_id)
        assert trial is not None
        return trial


def test_claim_returns_the_whole_job(api: Api) -> None:
    search = api.submit()
    job = claim(api)
    assert set(job) == {
        "lease_id", "trial_id", "search_id", "trial_number", "kind", "eval_split", "attempt", "model",
        "task", "method", "schedule", "proxy", "objective", "dynamic", "heartbeat_interval_s", "expires_at",
        "upload_adapter", "keep_state", "resume",
    }  # fmt: skip
    assert job["keep_state"] is False and job["resume"] is None, "one fidelity: no rung to go on from"
    assert job["kind"] == "proxy" and job["dynamic"] is None and job["eval_split"] == "val"
    assert job["upload_adapter"] is False, "only confirmation runs upload their adapter"
    assert job["search_id"] == search["id"] and job["trial_number"] == 0 and job["attempt"] == 1
    assert job["model"] == "builtin:tiny-vlm" and job["task"] == "builtin:digits-vqa"
    assert job["method"] == {"kind": "lora", "dropout": 0.0, "dmlora": {}}
    assert job["proxy"] == SPEC["proxy"] and job["objective"] == SPEC["objective"]
    assert job["heartbeat_interval_s"] == 5
    assert RankSchedule.from_json(job["schedule"]).parameter_count == search["budget_params"]
    trials = api.trials(search["id"])
    assert trials[0]["state"] == "running" and trials[0]["worker_name"] == "gpu-0"
    worker = api.get("/workers").json()["workers"][0]
    assert worker["name"] == "gpu-0" and worker["current_trial_id"] == job["trial_id"]


def test_nothing_queued_is_204_with_retry_after(api: Api) -> None:
    assert api.claim() is None
    assert api.get("/workers").json()["workers"][0]["current_trial_id"] is None


def test_heartbeat_extends_and_stores_measurements(api: Api) -> None:
    api.submit()
    job = claim(api)
    points = [{"step": 50, "loss": 1.5, "metric": 0.4}, {"step": 100, "loss": 1.1}]
    first = api.heartbeat(job, step=100, measurements=points, site_stats={"q": {"norm": 1.0}})
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer["action"] == "continue" and answer["schedule"] is None
    assert answer["expires_at"] >= job["expires_at"]
    again = api.heartbeat(job, step=120, measurements=[*points, {"step": 120, "loss": 1.0}])
    assert again.json()["action"] == "continue"
    with api.session() as session:
        rows = session.scalars(select(Measurement).where(Measurement.trial_id == job["trial_id"])).all()
        assert sorted((m.step, m.loss, m.metric) for m in rows) == [
            (50, 1.5, 0.4), (100, 1.1, None), (120, 1.0, None),
        ]  # fmt: skip
    trial = trial_row(api, job["trial_id"])
    assert trial.step == 120 and trial.total_steps == 200 and trial.site_stats == {"q": {"norm": 1.0}}


def test_complete_is_idempotent_and_stale_attempts_conflict(api: Api) -> None:
    api.submit(max_trials=2, parallelism=1)
    job = claim(api)
    done = api.complete(job, accuracy=0.8, trainable_params=120_000, wall_time_s=3.5, device="cpu")
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["trial"]["state"] == "succeeded" and body["trial"]["objective"] == 0.8
    assert body["trial"]["trainable_params"] == 120_000 and body["search_state"] == "running"
    before = trial_row(api, job["trial_id"])
    repeat = api.complete(job, accuracy=0.1)
    assert repeat.status_code == 200 and repeat.json()["trial"]["objective"] == 0.8
    after = trial_row(api, job["trial_id"])
    assert (after.metrics, after.finished_at, after.objective) == (before.metrics, before.finished_at, 0.8)
    assert api.get("/workers").json()["workers"][0]["trials_done"] == 1
    wrong = api.post(f"/leases/{job['lease_id']}/complete", {"attempt": 2, "metrics": {"accuracy": 0.5}})
    assert wrong.status_code == 409 and wrong.json()["detail"][0]["loc"] == ["body", "attempt"]


def test_result_of_an_older_attempt_is_rejected(api: Api) -> None:
    api.submit(max_trials=1, parallelism=1, max_attempts=3)
    first = claim(api)
    assert api.fail(first, retryable=True).json()["requeued"] is True
    second = claim(api)
    assert second["trial_id"] == first["trial_id"] and second["attempt"] == 2
    stale = api.complete(first)
    assert stale.status_code == 409 and stale.json()["detail"][0]["loc"] == ["body", "attempt"]
    assert api.heartbeat(first).json()["action"] == "stop"
    assert api.complete(second).status_code == 200


def test_objective_metric_must_be_present_and_finite(api: Api) -> None:
    api.submit()
    job = claim(api)
    path = f"/leases/{job['lease_id']}/complete"
    for raw in (
        '{"attempt": 1, "metrics": {"accuracy": NaN}}',
        '{"attempt": 1, "metrics": {"accuracy": Infinity}}',
    ):
        response = api.post(path, raw=raw)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "metrics", "accuracy"]
    missing = api.post(path, {"attempt": 1, "metrics": {"loss": 0.3}})
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == [
        "body",
        "metrics",
        "accuracy",
    ]
    nan_curve = api.post(
        path, raw='{"attempt": 1, "metrics": {"accuracy": 0.5}, "curve": [{"step": 1, "loss": NaN}]}'
    )
    assert nan_curve.status_code == 422 and nan_curve.json()["detail"][0]["loc"][:2] == ["body", "curve"]
    nan_timeline = api.post(
        path, raw='{"attempt": 1, "metrics": {"accuracy": 0.5}, "timeline": [{"t": -Infinity}]}'
    )
    assert nan_timeline.status_code == 422 and nan_timeline.json()["detail"][0]["loc"][:2] == [
        "body",
        "timeline",
    ]
    nan_beat = api.post(
        f"/leases/{job['lease_id']}/heartbeat", raw='{"attempt": 1, "step": 1, "site_stats": {"x": NaN}}'
    )
    assert nan_beat.status_code == 422 and nan_beat.json()["detail"][0]["loc"][:2] == ["body", "site_stats"]
    assert trial_row(api, job["trial_id"]).state == "running", "no rejected request changed the trial"


def test_retryable_failure_requeues_until_max_attempts(api: Api) -> None:
    search = api.submit(max_trials=1, parallelism=1, max_attempts=2)
    first = claim(api)
    requeued = api.fail(first, reason="CUDA out of memory", retryable=True).json()
    assert requeued["requeued"] is True and requeued["trial"]["state"] == "queued"
    assert api.fail(first, retryable=True).status_code == 200, "a repeated fail changes nothing"
    second = claim(api)
    assert second["attempt"] == 2
    final = api.fail(second, reason="CUDA out of memory again", retryable=True).json()
    assert final["requeued"] is False and final["trial"]["state"] == "failed"
    assert final["trial"]["reason"] == "CUDA out of memory again"
    assert api.search(search["id"])["state"] == "failed"


def test_non_retryable_failure_fails_at_once(api: Api) -> None:
    api.submit(max_trials=2, parallelism=1, max_attempts=3)
    job = claim(api)
    answer = api.fail(job, reason="schedule does not fit the model", retryable=False).json()
    assert answer["trial"]["state"] == "failed" and answer["requeued"] is False
    assert claim(api)["trial_number"] == 1, "the failed trial was replaced"


def test_expired_lease_requeues_then_fails_after_max_attempts(api: Api) -> None:
    search = api.submit(max_trials=1, parallelism=1, max_attempts=2, lease_ttl_s=30)
    first = claim(api, "worker-a")
    assert reap(api, 10) == 0, "not expired yet"
    assert reap(api, 31) == 1
    trial = trial_row(api, first["trial_id"])
    assert trial.state == "queued" and trial.reason == "lease of attempt 1 expired"
    assert api.heartbeat(first).json()["action"] == "stop"
    second = claim(api, "worker-b")
    assert second["trial_id"] == first["trial_id"] and second["attempt"] == 2
    assert api.get("/workers").json()["workers"][0]["name"] == "worker-b"
    assert reap(api, 31) == 1
    trial = trial_row(api, first["trial_id"])
    assert trial.state == "failed" and trial.reason is not None
    assert trial.reason.startswith("lease expired 2 times")
    assert api.search(search["id"])["state"] == "failed"
    with api.session() as session:
        states = session.scalars(select(Lease.state).where(Lease.trial_id == first["trial_id"])).all()
        assert sorted(states) == ["expired", "expired"]


def test_claim_reaps_expired_leases(api: Api) -> None:
    api.submit(max_trials=1, parallelism=1, lease_ttl_s=1)
    first = claim(api)
    with api.session() as session:  # make the lease overdue without sleeping
        lease = session.get(Lease, first["lease_id"])
        assert lease is not None
        lease.expires_at = utcnow() - timedelta(seconds=1)
        session.commit()
    second = claim(api)
    assert second["trial_id"] == first["trial_id"] and second["attempt"] == 2


def test_late_result_after_expiry_is_kept_if_nobody_reclaimed(api: Api) -> None:
    api.submit(max_trials=1, parallelism=1, lease_ttl_s=30)
    job = claim(api)
    assert reap(api, 31) == 1
    late = api.complete(job, accuracy=0.7)
    assert late.status_code == 200 and late.json()["trial"]["state"] == "succeeded"
    assert late.json()["search_state"] == "finished"


def test_unknown_lease_and_bad_bodies(api: Api) -> None:
    api.submit()
    job = claim(api)
    unknown = api.post("/leases/no-such-lease/heartbeat", {"attempt": 1, "step": 1})
    assert unknown.status_code == 404 and unknown.json()["detail"][0]["loc"] == ["path", "lease_id"]
    lease = f"/leases/{job['lease_id']}"
    full = {"name": "w", "device": "cpu", "hostname": "h"}
    bad = [
        ("/leases", {"worker": {"name": "w"}}, ["body", "worker", "device"]),
        ("/leases", {"worker": {**full, "gpu": 1}}, ["body", "worker", "gpu"]),
        (f"{lease}/heartbeat", {"attempt": 0, "step": 1}, ["body", "attempt"]),
        (f"{lease}/heartbeat", {"attempt": 1, "step": -1}, ["body", "step"]),
        (f"{lease}/heartbeat", {"attempt": 1, "step": 1, "measurements": [{"loss": 1}]},
         ["body", "measurements", 0, "step"]),
        (f"{lease}/complete", {"attempt": 1, "metrics": {}}, ["body", "metrics"]),
        (f"{lease}/complete", {"attempt": 1, "metrics": {"accuracy": "hi"}}, ["body", "metrics", "accuracy"]),
        (f"{lease}/fail", {"attempt": 1}, ["body", "reason"]),
        (f"{lease}/fail", {"attempt": 1, "reason": "x", "retryable": "yes"}, ["body", "retryable"]),
    ]  # fmt: skip
    for path, body, loc in bad:
        response = api.post(path, body)
        assert response.status_code == 422, (path, body, response.text)
        assert response.json()["detail"][0]["loc"] == loc, (path, body, response.text)
    heartbeat_wrong_attempt = api.post(f"{lease}/heartbeat", {"attempt": 2, "step": 1})
    assert heartbeat_wrong_attempt.status_code == 409
    assert trial_row(api, job["trial_id"]).state == "running"
