"""Promotions that go on from the rung below (spec ``fidelity.resume``), through the REST API on SQLite
and PostgreSQL: rung trials upload their training state, a promotion's job names it, its worker fetches
it, the trial records the step it went on from, and a search's states go when it ends.

The states here are opaque bytes (the server never reads them); the real ``TrainState`` of a real
worker goes through the same endpoints in tests/e2e/test_worker.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from ranktune.service.app import create_app
from ranktune.service.db.models import TrialCheckpoint
from tests.service.api import Api, make_settings
from tests.service.test_fidelity_searches import FIDELITY, PROXY, score

LIMIT = 64 * 1024


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    app = create_app(make_settings(database_url, max_adapter_bytes=LIMIT))
    with TestClient(app) as client:
        yield Api(client, app)


def put_state(api: Api, job: dict[str, Any], data: bytes, steps: int | None = None) -> httpx.Response:
    steps = job["proxy"]["steps"] if steps is None else steps
    return api.client.put(
        f"/api/v1/leases/{job['lease_id']}/checkpoint",
        params={"attempt": job["attempt"], "steps": steps},
        content=data,
        headers={**api.headers, "Content-Type": "application/octet-stream"},
    )


def get_state(api: Api, job: dict[str, Any]) -> httpx.Response:
    return api.client.get(f"/api/v1/leases/{job['lease_id']}/checkpoint", headers=api.headers)


def stored_states(api: Api) -> int:
    with api.session() as session:
        return int(session.scalar(select(func.count()).select_from(TrialCheckpoint)) or 0)


def state_of(trial_id: int) -> bytes:
    return f"state of trial {trial_id}".encode() * 10


def test_promotions_go_on_from_the_state_of_the_rung_below(api: Api) -> None:
    search = api.submit(strategy="random", max_trials=22, parallelism=1, fidelity=FIDELITY, proxy=PROXY)
    resumed = []
    while (job := api.claim()) is not None:
        steps = job["proxy"]["steps"]
        assert job["keep_state"] == (job["kind"] == "proxy" and steps < 180)  # the top rung keeps none
        if job["keep_state"]:
            stored = put_state(api, job, state_of(job["trial_id"]))
            assert stored.status_code == 200, stored.text
            answer = stored.json()
            assert answer["steps"] == steps and answer["size_bytes"] == len(state_of(job["trial_id"]))
        extra: dict[str, Any] = {}
        if job["resume"] is not None:
            resume = job["resume"]
            assert resume["steps"] == {60: 20, 180: 60}[steps]
            got = get_state(api, job)
            assert got.status_code == 200 and got.content == state_of(resume["trial_id"])
            assert got.headers["X-Ranktune-Steps"] == str(resume["steps"])
            extra["resumed_from"] = resume["steps"]
            resumed.append(job)
        else:
            assert get_state(api, job).status_code == 404
        assert api.complete(job, score(job["schedule"], steps), **extra).status_code == 200
    trials = {t["id"]: t for t in api.trials(search["id"], schedules=True)}
    promoted = [t for t in trials.values() if t["rung"] > 0]
    assert promoted and len(resumed) == len(promoted)  # every promotion found its state
    for job in resumed:
        trial, source = trials[job["trial_id"]], trials[job["resume"]["trial_id"]]
        assert trial["resumed_from"] == source["steps"] and source["rung"] == trial["rung"] - 1
        assert (source["schedule"], source["proxy_seed"]) == (trial["schedule"], trial["proxy_seed"])
    assert all(t["resumed_from"] is None for t in trials.values() if t["rung"] == 0)
    assert api.search(search["id"])["state"] == "finished"
    assert stored_states(api) == 0  # the search ended: no promotion needs them


def test_a_promotion_without_a_stored_state_trains_from_the_start(api: Api) -> None:
    api.submit(strategy="random", max_trials=22, parallelism=1, fidelity=FIDELITY, proxy=PROXY)
    while (job := api.claim()) is not None:  # a worker from before resumable rungs uploads nothing
        assert job["resume"] is None
        assert api.complete(job, score(job["schedule"], job["proxy"]["steps"])).status_code == 200


@pytest.mark.parametrize(
    "overrides",
    [
        {"proxy": {"steps": 40}},  # one fidelity: nothing to go on from
        {"fidelity": {**FIDELITY, "resume": False}, "proxy": PROXY},
        {"fidelity": FIDELITY, "proxy": PROXY, "method": {"kind": "dmlora"}},  # its own drop schedule
        {"fidelity": FIDELITY, "proxy": PROXY, "dynamic": {"at": [0.5]}},  # re-allocates mid-run
    ],
)
def test_searches_that_cannot_go_on_keep_no_state(api: Api, overrides: dict[str, Any]) -> None:
    api.submit(strategy="random", max_trials=4, parallelism=1, **overrides)
    job = api.claim()
    assert job is not None and job["keep_state"] is False and job["resume"] is None
    refused = put_state(api, job, b"state")
    assert refused.status_code == 409 and "not a rung a promotion goes on from" in refused.text


def test_bad_uploads_are_refused_naming_the_field(api: Api) -> None:
    search = api.submit(strategy="random", max_trials=4, parallelism=1, fidelity=FIDELITY, proxy=PROXY)
    job = api.claim()
    assert job is not None and job["keep_state"]
    wrong_steps = put_state(api, job, b"state", steps=7)
    assert wrong_steps.status_code == 422 and wrong_steps.json()["detail"][0]["loc"] == ["query", "steps"]
    assert put_state(api, job, b"").status_code == 422
    too_large = put_state(api, job, b"x" * (LIMIT + 1))
    assert too_large.status_code == 413 and "RANKTUNE_MAX_ADAPTER_BYTES" in too_large.text
    stale = api.client.put(
        f"/api/v1/leases/{job['lease_id']}/checkpoint",
        params={"attempt": job["attempt"] + 1, "steps": 20},
        content=b"state",
        headers={"Content-Type": "application/octet-stream"},
    )
    assert stale.status_code == 409 and "attempt" in stale.text
    assert stored_states(api) == 0  # nothing half-written
    beyond = api.complete(job, 0.5, resumed_from=20)  # a rung of 20 steps cannot go on from step 20
    assert beyond.status_code == 422 and beyond.json()["detail"][0]["loc"] == ["body", "resumed_from"]
    assert put_state(api, job, b"first").status_code == 200
    assert put_state(api, job, b"second").status_code == 200  # a resend replaces it
    assert stored_states(api) == 1
    assert api.post(f"/searches/{search['id']}/cancel").status_code == 200
    assert stored_states(api) == 0
    assert put_state(api, job, b"late").status_code == 409  # the search is over
    missing = api.client.get("/api/v1/leases/no-such-lease/checkpoint")
    assert missing.status_code == 404 and "lease_id" in missing.text
