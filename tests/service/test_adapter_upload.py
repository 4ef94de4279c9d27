"""Trained adapters of confirmation runs: uploaded by the worker, kept for the winner, exported.

The archives here hold a real PEFT config of the trial's schedule and a real safetensors file; the
PEFT reload of weights a worker trained is checked end to end in tests/e2e/test_demo.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from ranktune.service.app import create_app
from ranktune.service.db.models import TrialAdapter
from tests.service.api import Api, make_settings
from tests.service.seeding import adapter_archive as archive

LIMIT = 64 * 1024


def upload(api: Api, job: dict[str, Any], data: bytes, attempt: int | None = None) -> Any:
    attempt = job["attempt"] if attempt is None else attempt
    return api.client.put(
        f"/api/v1/leases/{job['lease_id']}/adapter",
        params={"attempt": attempt},
        content=data,
        headers={**api.headers, "Content-Type": "application/zip"},
    )


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    app = create_app(make_settings(database_url, max_adapter_bytes=LIMIT))
    with TestClient(app) as client:
        yield Api(client, app)


def run_proxies(api: Api, accuracies: tuple[float, ...]) -> None:
    for accuracy in accuracies:
        job = api.claim()
        assert job is not None and job["kind"] == "proxy" and job["upload_adapter"] is False
        assert api.complete(job, accuracy).status_code == 200


def stored_adapters(api: Api) -> int:
    with api.session() as session:
        return int(session.scalar(select(func.count()).select_from(TrialAdapter)) or 0)


def test_the_winners_best_confirmation_run_keeps_its_adapter_and_exports_it(api: Api) -> None:
    search = api.submit(strategy="random", max_trials=3, parallelism=1, confirm={"top_k": 1, "steps": 50,
                        "seeds": 2, "recheck": 0})  # fmt: skip
    run_proxies(api, (0.50, 0.70, 0.60))
    assert api.get(f"/searches/{search['id']}/export/peft/adapter").status_code == 404
    sent: dict[int, bytes] = {}
    seen: dict[int, int] = {}
    while (job := api.claim()) is not None:
        assert job["kind"] == "confirm" and job["upload_adapter"] is True
        trial = next(t for t in api.trials(search["id"]) if t["id"] == job["trial_id"])
        sent[job["trial_id"]] = archive(job)
        stale = upload(api, job, sent[job["trial_id"]], attempt=job["attempt"] + 1)
        assert stale.status_code == 409 and "attempt" in stale.text
        assert upload(api, job, archive(job, pad=1)).status_code == 200
        answer = upload(api, job, sent[job["trial_id"]])  # a resend replaces the first upload
        assert answer.status_code == 200, answer.text
        assert answer.json()["sha256"] == hashlib.sha256(sent[job["trial_id"]]).hexdigest()
        # Trial 1 (0.70) confirms above uniform; each schedule's second run is its better one.
        seen[trial["confirms"]] = seen.get(trial["confirms"], -1) + 1
        value = {0: 0.60, 1: 0.66}[trial["confirms"]] + 0.02 * seen[trial["confirms"]]
        assert api.complete(job, value).status_code == 200
    assert len(sent) == 4, "uniform and the top schedule, two seeds each"
    found = api.search(search["id"])
    assert found["state"] == "finished" and found["result"]["winner"]["trial_number"] == 1
    trials = {t["id"]: t for t in api.trials(search["id"])}
    runs = [t for t in trials.values() if t["kind"] == "confirm" and t["confirms"] == 1]
    best_run = max(runs, key=lambda t: t["objective"])
    export = api.get(f"/searches/{search['id']}/export/peft").json()
    stored = export["adapter"]
    assert stored["trial_id"] == best_run["id"] and stored["objective"] == pytest.approx(
        best_run["objective"]
    )
    assert stored["size_bytes"] == len(sent[best_run["id"]])
    assert stored_adapters(api) == 1, "the other runs' adapters are deleted once the winner is known"
    download = api.client.get(stored["url"], headers=api.headers)
    assert download.status_code == 200 and download.headers["content-type"] == "application/zip"
    assert download.content == sent[best_run["id"]]
    with zipfile.ZipFile(io.BytesIO(download.content)) as zipped:
        assert json.loads(zipped.read("adapter_config.json"))["ranktune_trial"] == best_run["id"]
    loser = next(t for t in trials.values() if t["kind"] == "confirm" and t["confirms"] == 0)
    loser_job = {"lease_id": lease_of(api, loser["id"]), "attempt": loser["attempt"]}
    late = upload(api, loser_job, sent[loser["id"]])
    assert late.status_code == 409 and "confirms no winner" in late.text
    assert stored_adapters(api) == 1


def lease_of(api: Api, trial_id: int) -> str:
    from ranktune.service.db.models import Lease

    with api.session() as session:
        return str(session.scalar(select(Lease.id).where(Lease.trial_id == trial_id)))


@pytest.mark.parametrize(
    ("case", "status", "words"),
    [
        ("proxy trial", 409, "only confirmation runs"),
        ("not a zip", 422, "not a zip archive"),
        ("no weights", 422, "lacks adapter_model.safetensors"),
        ("too large", 413, "RANKTUNE_MAX_ADAPTER_BYTES"),
        ("unknown lease", 404, "there is no lease"),
    ],
)
def test_bad_uploads_are_refused_naming_the_part(api: Api, case: str, status: int, words: str) -> None:
    api.submit(
        strategy="random",
        max_trials=1,
        parallelism=1,
        confirm={"top_k": 1, "steps": 50, "seeds": 1, "recheck": 0},
    )
    job = api.claim()
    assert job is not None
    if case != "proxy trial":
        assert api.complete(job, 0.5).status_code == 200
        job = api.claim()
        assert job is not None and job["kind"] == "confirm"
    data = {
        "proxy trial": archive(job),
        "not a zip": b"PK? not really",
        "no weights": archive(job, files=("config",)),
        "too large": archive(job, pad=LIMIT),
        "unknown lease": archive(job),
    }[case]
    if case == "unknown lease":
        job = {**job, "lease_id": "0" * 36}
    answer = upload(api, job, data)
    assert answer.status_code == status and words in answer.text, answer.text
    if status != 404:
        location = answer.json()["detail"][0]["loc"]
        assert location[-1] in ("body", "lease_id"), location
    assert stored_adapters(api) == 0
