"""Server-side CLI: ``serve`` refuses what it must, ``db upgrade``, ``token create|list|revoke``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ranktune.service.app import create_app
from ranktune.service.cli import app
from ranktune.service.db.repository.tokens import create_token
from tests.service.api import WORKER, Api, make_settings
from tests.service.databases import SqliteDatabases
from tests.service.seeding import seed_confirmed_search
from tests.service.server import LiveServer

RANKTUNE = str(Path(sys.executable).parent / "ranktune")
runner = CliRunner()


def ranktune(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RANKTUNE, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout
    )


def test_serve_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = ranktune("serve", "--port", "0", env={"RANKTUNE_DATABASE_URL": url})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "`ranktune db upgrade`" in lines[0] and "fresh.db" in lines[0]


def test_serve_says_the_optuna_mirror_moved_to_optuna_sync(tmp_path: Path) -> None:
    env = {"RANKTUNE_DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}", "RANKTUNE_OPTUNA_MIRROR": "true"}
    result = ranktune("serve", "--port", "0", env=env)  # refused (not migrated) after the warning
    assert result.returncode == 2
    assert "RANKTUNE_OPTUNA_MIRROR is no longer read" in result.stderr
    assert "`ranktune optuna-sync`" in result.stderr


def test_db_upgrade_then_serve_refuses_a_public_host_without_tokens(tmp_path: Path) -> None:
    env = {"RANKTUNE_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    upgraded = ranktune("db", "upgrade", env=env)
    assert upgraded.returncode == 0 and "(head)" in upgraded.stderr
    again = ranktune("db", "upgrade", env=env)
    assert "already at revision" in again.stderr
    refused = ranktune("serve", "--host", "0.0.0.0", "--port", "0", env=env)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].startswith("error: host: refusing to serve on 0.0.0.0")


def test_embedded_default_database_is_upgraded_automatically(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RANKTUNE_DATABASE_URL"}
    env.update(XDG_DATA_HOME=str(tmp_path), HOME=str(tmp_path))  # where platformdirs puts the default
    result = subprocess.run([RANKTUNE, "token", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ranktune" / "ranktune.db").exists()


def test_token_commands(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANKTUNE_DATABASE_URL", database_url)
    created = runner.invoke(app, ["token", "create", "--role", "worker", "--name", "pool-a"])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith("rt_") and len(token) == 46
    duplicate = runner.invoke(app, ["token", "create", "--role", "user", "--name", "pool-a"])
    assert duplicate.exit_code == 2 and "already exists" in duplicate.output
    bad_role = runner.invoke(app, ["token", "create", "--role", "root", "--name", "x"])
    assert bad_role.exit_code == 2
    listed = runner.invoke(app, ["token", "list"])
    assert "pool-a" in listed.stdout and "worker" in listed.stdout and token not in listed.stdout

    with TestClient(create_app(make_settings(database_url))) as client:
        headers = {"Authorization": f"Bearer {token}"}
        assert client.post("/api/v1/leases", json={"worker": WORKER}, headers=headers).status_code == 204
        revoked = runner.invoke(app, ["token", "revoke", "pool-a"])
        assert revoked.exit_code == 0, revoked.output
        assert client.post("/api/v1/leases", json={"worker": WORKER}, headers=headers).status_code == 401
    missing = runner.invoke(app, ["token", "revoke", "nobody"])
    assert missing.exit_code == 2 and "no token named 'nobody'" in missing.output


def test_status_of_a_confirmed_search_shows_the_paired_interval(tmp_path: Path) -> None:
    with SqliteDatabases(tmp_path).fresh() as url:
        server_app = create_app(make_settings(url))
        with server_app.state.sessions() as session:
            user = create_token(session, "cli-user", "user")[1]
            worker = create_token(session, "cli-worker", "worker")[1]
        with LiveServer(server_app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            search_id = seed_confirmed_search(Api(client, token=user), Api(client, token=worker))
            args = ["status", str(search_id), "--server", server.url, "--token", user]
            result = CliRunner().invoke(app, args)
            exported = CliRunner().invoke(app, ["export", str(search_id), "-o", str(tmp_path / "best"),
                                                "--server", server.url, "--token", user])  # fmt: skip
            stored = Api(client, token=user).get(f"/searches/{search_id}/export/peft").json()["adapter"]
            unconfirmed = Api(client, token=user).submit(max_trials=1, parallelism=1)["id"]
            Api(client, token=worker).complete(Api(client, token=worker).claim() or {}, 0.5)
            bare = CliRunner().invoke(app, ["export", str(unconfirmed), "-o", str(tmp_path / "bare"),
                                            "--server", server.url, "--token", user])  # fmt: skip
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # rich wraps long lines
    assert "confirmed: trial" in text and "95% CI" in text
    assert "paired over 2 seeds x 3,000 examples): significant gain" in text
    assert exported.exit_code == 0, exported.output
    config = json.loads((tmp_path / "best" / "adapter_config.json").read_text())
    assert config["ranktune_trial"] == stored["trial_id"], "the winner's best run's own files"
    assert (tmp_path / "best" / "adapter_model.safetensors").is_file()
    assert f"trained weights of confirmation trial {stored['trial_id']}" in " ".join(exported.output.split())
    assert bare.exit_code == 0, bare.output
    assert not (tmp_path / "bare" / "adapter_model.safetensors").exists()
    assert "no trained weights are stored for this search" in " ".join(bare.output.split())
