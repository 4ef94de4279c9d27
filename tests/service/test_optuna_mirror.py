"""Finished trials mirrored into an Optuna study that optuna-dashboard (or optuna itself) opens, by
``ranktune optuna-sync``: never by the API process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from ranktune.service import optuna_mirror
from ranktune.service.app import create_app
from ranktune.service.cli import app as cli
from tests.service.api import Api, make_settings

RANKTUNE = str(Path(sys.executable).parent / "ranktune")
runner = CliRunner()


@pytest.fixture(autouse=True)
def fresh_storages() -> Iterator[None]:
    yield
    optuna_mirror.close_storages()


def finish_four_trials(api: Api) -> dict:
    """Three succeeded trials (accuracy 0.4, 0.6, 0.5) and one failed."""
    search = api.submit(strategy="random", max_trials=4, parallelism=4)
    jobs = [api.claim() for _ in range(4)]
    assert all(job is not None for job in jobs)
    for job, accuracy in zip(jobs[:3], (0.4, 0.6, 0.5), strict=True):
        assert api.complete(job, accuracy).status_code == 200
    assert api.fail(jobs[3], "broken", retryable=False).status_code == 200
    return search


def sync_once(database_url: str, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("RANKTUNE_DATABASE_URL", database_url)
    result = runner.invoke(cli, ["optuna-sync", "--once"])
    assert result.exit_code == 0, result.output
    match = re.fullmatch(r"mirrored (\d+) trial\(s\) into (.+)", result.stdout.strip())
    assert match, result.stdout
    return int(match.group(1))


def mirror_ready(database_url: str) -> bool:
    """The SQLite mirror exists and Optuna has stamped its schema version (the loop's first pass is past
    creating the storage, which another opener would race: both would insert the version row)."""
    url = optuna_mirror.storage_url(database_url)
    assert url is not None and url.startswith("sqlite")
    if not Path(url.removeprefix("sqlite:///")).exists():
        return False
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return bool(connection.scalar(text("SELECT count(*) FROM alembic_version")))
    except OperationalError:  # the table is not created yet
        return False
    finally:
        engine.dispose()


def mirror_exists(database_url: str) -> bool:
    url = optuna_mirror.storage_url(database_url)
    assert url is not None
    if database_url.startswith("sqlite"):
        return Path(url.removeprefix("sqlite:///")).exists()
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            query = "SELECT 1 FROM information_schema.schemata WHERE schema_name = :schema"
            return connection.scalar(text(query), {"schema": optuna_mirror.SCHEMA}) is not None
    finally:
        engine.dispose()


def test_storage_urls_keep_optuna_apart_from_ranktune_tables() -> None:
    assert optuna_mirror.storage_url("sqlite:////data/ranktune.db") == "sqlite:////data/ranktune.optuna.db"
    assert optuna_mirror.storage_url("sqlite://") is None
    pg = optuna_mirror.storage_url("postgresql+psycopg://u:p@db:5432/ranktune")
    assert pg == "postgresql+psycopg://u:p@db:5432/ranktune?options=-csearch_path%3Dranktune_optuna"


def test_finished_trials_are_mirrored_once_with_their_vectors(
    api: Api, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    search = finish_four_trials(api)
    assert sync_once(database_url, monkeypatch) == 4
    assert sync_once(database_url, monkeypatch) == 0  # append-only: nothing new, from a new process too
    url = optuna_mirror.storage_url(database_url)
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


def test_rung_trials_say_their_rung_and_length(
    api: Api, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fidelity = {"min_steps": 10, "max_steps": 90, "eta": 3}
    search = api.submit(
        strategy="random", max_trials=6, parallelism=1, fidelity=fidelity, proxy={"lr": 0.001}
    )
    while (job := api.claim()) is not None:
        assert api.complete(job, 0.3 + job["trial_number"] / 100).status_code == 200
    assert sync_once(database_url, monkeypatch) == 6
    url = optuna_mirror.storage_url(database_url)
    assert url is not None
    study = optuna.load_study(study_name=optuna_mirror.study_name(search["id"]), storage=url)
    stored = {t["number"]: t for t in api.trials(search["id"])}
    for trial in study.get_trials():
        number = trial.user_attrs["ranktune_trial"]
        assert (trial.user_attrs["rung"], trial.user_attrs["steps"]) == (
            stored[number]["rung"],
            stored[number]["steps"],
        )
    assert {t.user_attrs["rung"] for t in study.get_trials()} >= {0, 1}


def test_the_api_process_never_mirrors(database_url: str) -> None:
    app = create_app(make_settings(database_url, reap_interval_s=0.05))
    with TestClient(app) as client:
        finish_four_trials(Api(client, app))
        deadline = time.monotonic() + 10
        sweeps = 0
        while sweeps < 5 and time.monotonic() < deadline:  # several sweeps after the trials finished
            time.sleep(0.05)
            found = re.search(
                r"^ranktune_lease_sweep_seconds_count (\d+)$", client.get("/metrics").text, re.M
            )
            sweeps = int(found.group(1)) if found else 0
        assert sweeps >= 5, "the lease sweep did not run"
    assert not mirror_exists(database_url)


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_pass_skips_while_another_sync_holds_the_lock(
    api: Api, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    finish_four_trials(api)
    other = create_engine(database_url)
    try:
        with other.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": optuna_mirror.LOCK_KEY})
            assert sync_once(database_url, monkeypatch) == 0
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": optuna_mirror.LOCK_KEY})
        assert sync_once(database_url, monkeypatch) == 4
    finally:
        other.dispose()


def test_an_in_memory_database_has_no_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANKTUNE_DATABASE_URL", "sqlite://")
    result = runner.invoke(cli, ["optuna-sync", "--once"])
    assert result.exit_code == 2
    assert "error: database: sqlite:// has no Optuna mirror" in result.output


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"])  # one backend is enough for the process's life cycle
def test_the_loop_mirrors_new_trials_and_stops_on_sigterm(api: Api, database_url: str) -> None:
    env = {**os.environ, "RANKTUNE_DATABASE_URL": database_url}
    process = subprocess.Popen(
        [RANKTUNE, "optuna-sync", "--interval", "0.2"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        search = finish_four_trials(api)
        url = optuna_mirror.storage_url(database_url)
        assert url is not None
        deadline, mirrored = time.monotonic() + 30, 0
        while mirrored < 4 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
            if not mirror_ready(database_url):
                continue  # opening the storage first would race the loop creating and stamping it
            try:
                study = optuna.load_study(study_name=optuna_mirror.study_name(search["id"]), storage=url)
                mirrored = len(study.get_trials())
            except KeyError:  # the study is not there yet
                continue
        assert mirrored == 4
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    # The trials finish while the loop runs: its passes may mirror them in several goes, each once.
    assert sum(int(n) for n in re.findall(r"mirrored (\d+) trial\(s\)", stderr)) == 4, stderr
