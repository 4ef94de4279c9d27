"""Finished trials mirrored into an Optuna study that optuna-dashboard (or optuna itself) opens."""

from __future__ import annotations

from collections.abc import Iterator

import optuna
import pytest

from ranktune.service import optuna_mirror
from ranktune.service.app import mirror_once
from tests.service.api import Api


@pytest.fixture(autouse=True)
def fresh_storages() -> Iterator[None]:
    yield
    optuna_mirror.close_storages()


def test_storage_urls_keep_optuna_apart_from_ranktune_tables() -> None:
    assert optuna_mirror.storage_url("sqlite:////data/ranktune.db") == "sqlite:////data/ranktune.optuna.db"
    assert optuna_mirror.storage_url("sqlite://") is None
    pg = optuna_mirror.storage_url("postgresql+psycopg://u:p@db:5432/ranktune")
    assert pg == "postgresql+psycopg://u:p@db:5432/ranktune?options=-csearch_path%3Dranktune_optuna"


def test_finished_trials_are_mirrored_once_with_their_vectors(api: Api) -> None:
    search = api.submit(strategy="random", max_trials=4, parallelism=4)
    jobs = [api.claim() for _ in range(4)]
    assert all(job is not None for job in jobs)
    for job, accuracy in zip(jobs[:3], (0.4, 0.6, 0.5), strict=True):
        assert api.complete(job, accuracy).status_code == 200
    assert api.fail(jobs[3], "broken", retryable=False).status_code == 200
    assert api.app is not None
    assert mirror_once(api.app) == 4
    assert mirror_once(api.app) == 0  # append-only: nothing new
    url = optuna_mirror.storage_url(api.app.state.settings.database_url)
    assert url is not None
    study = optuna.load_study(study_name=optuna_mirror.study_name(search["id"]), storage=url)
    trials = sorted(study.get_trials(), key=lambda t: t.user_attrs["ranktune_trial"])
    assert [t.user_attrs["ranktune_trial"] for t in trials] == [0, 1, 2, 3]
    assert [t.value for t in trials[:3]] == [0.4, 0.6, 0.5]
    assert trials[3].state == optuna.trial.TrialState.FAIL
    stored = {t["number"]: t for t in api.trials(search["id"])}
    assert trials[0].params == {name: 1.0 for name in trials[0].params}  # trial 0: the uniform vector
    assert set(trials[1].params) == set(trials[0].params) and all(
        n.startswith(("coarse.", "fine.")) for n in trials[1].params
    )
    assert trials[1].user_attrs["parameter_count"] == stored[1]["parameter_count"]
    assert study.best_trial.user_attrs["ranktune_trial"] == 1
