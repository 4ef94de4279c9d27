"""The lease hot path's memos and pools: what they keep, when they forget, and what they never serve.

- a stored search's spec and space are reused only while the stored JSON is equal;
- a token's principal is reused for at most ``auth_cache_s`` seconds, forgotten at once when this
  process creates or revokes a token, and never kept when the lookup failed;
- pooled PostgreSQL connections are tested after sitting idle, so a dead one is replaced;
- ``serve`` with several API processes answers like one.
"""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event, text, update

from ranktune.service.app import create_app
from ranktune.service.db.engine import make_engine
from ranktune.service.db.models import ApiToken
from ranktune.service.db.repository.tokens import create_token
from ranktune.service.db.types import utcnow
from ranktune.service.memo import JsonMemo, TtlMemo
from ranktune.service.schemas.spec import SearchCreate
from ranktune.service.searching import prepare_search, stored_space, stored_spec
from tests.service.api import WORKER, Api, make_settings, spec
from tests.service.databases import PostgresDatabases, SqliteDatabases

RANKTUNE = str(Path(sys.executable).parent / "ranktune")


# --- JsonMemo, TtlMemo ---------------------------------------------------------------------------


def test_json_memo_reuses_only_for_an_equal_document() -> None:
    memo: JsonMemo[object] = JsonMemo(size=2)
    builds: list[str] = []

    def build(tag: str) -> object:
        builds.append(tag)
        return object()

    document = {"a": [1, 2], "b": {"c": 3}}
    first = memo.get("k", document, lambda: build("first"))
    assert memo.get("k", copy.deepcopy(document), lambda: build("again")) is first
    other = memo.get("k", {"a": [1, 2], "b": {"c": 4}}, lambda: build("other"))  # same key, new JSON
    assert other is not first and builds == ["first", "other"]


def test_json_memo_keeps_its_own_copy_and_stays_bounded() -> None:
    memo: JsonMemo[int] = JsonMemo(size=2)
    document: dict[str, Any] = {"x": [1]}
    assert memo.get("k", document, lambda: 1) == 1
    document["x"].append(2)  # the caller changes its dict in place: the memo must not follow
    assert memo.get("k", document, lambda: 2) == 2
    assert memo.get("k", {"x": [1, 2]}, lambda: 3) == 2
    for key in ("a", "b", "c"):
        memo.get(key, {}, lambda: 0)
    assert memo.get("k", {"x": [1, 2]}, lambda: 4) == 4, "the least recently used entry went"


def test_ttl_memo_expires_and_invalidate_beats_a_slow_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    memo: TtlMemo[str] = TtlMemo(ttl_s=2.0)
    memo.put("t", "alice", memo.generation())
    clock[0] += 1.9
    assert memo.get("t") == "alice"
    clock[0] += 0.2
    assert memo.get("t") is None
    generation = memo.generation()  # a lookup starts, reads the database...
    memo.invalidate()  # ...while this process revokes the token
    memo.put("t", "alice", generation)
    assert memo.get("t") is None, "a value read before the invalidation is not kept"
    off: TtlMemo[str] = TtlMemo(ttl_s=0)
    off.put("t", "alice", off.generation())
    assert off.get("t") is None


def test_stored_spec_and_space_are_reused_while_the_json_is_equal() -> None:
    prepared = prepare_search(SearchCreate.model_validate(spec()), 60.0)
    spec_json = prepared.spec_json()
    sites = [site.to_json() for site in prepared.sites]
    space = stored_space(spec_json, sites)
    assert stored_space(copy.deepcopy(spec_json), copy.deepcopy(sites)) is space
    assert stored_spec(copy.deepcopy(spec_json)) is stored_spec(spec_json)
    assert space.budget == prepared.space.budget and space.sites == prepared.space.sites
    fewer = stored_space(spec_json, sites[1:])
    assert fewer is not space and len(fewer.sites) == len(space.sites) - 1
    other_grid = {**spec_json, "space": {**spec_json["space"], "grid": [0, 4, 8, 16]}}
    assert stored_space(other_grid, sites).grid.values == (0, 4, 8, 16)


# --- tokens ---------------------------------------------------------------------------------------


def count_token_lookups(app: Any) -> list[str]:
    seen: list[str] = []

    @event.listens_for(app.state.engine, "before_cursor_execute")
    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "FROM api_tokens" in statement:
            seen.append(statement)

    return seen


def revoke_elsewhere(url: str, name: str) -> None:
    """Revoke as another process would: straight SQL, no session of this process sees it."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(update(ApiToken).where(ApiToken.name == name).values(revoked_at=utcnow()))
    finally:
        engine.dispose()


def test_a_token_is_looked_up_once_per_ttl(database_url: str) -> None:
    app = create_app(make_settings(database_url, auth_cache_s=30))
    with TestClient(app) as client:
        with app.state.sessions() as session:
            token = create_token(session, "pool", "worker")[1]
        lookups = count_token_lookups(app)
        api = Api(client, app, token)
        for _ in range(5):
            assert api.post("/leases", {"worker": WORKER}).status_code == 204
        assert len(lookups) == 1
        wrong = api.with_token("rt_" + "x" * 43)
        assert [wrong.post("/leases", {"worker": WORKER}).status_code for _ in range(2)] == [401, 401]
        assert len(lookups) == 3, "an unknown token is looked up every time"


def test_revocation_elsewhere_takes_effect_within_the_ttl(database_url: str) -> None:
    # 2 s: long enough that a slow machine still reaches the second request inside it (0.5 s was not,
    # once, in CI); the wait below ends just after the memo entry's expiry, however long that took.
    ttl_s = 2.0
    app = create_app(make_settings(database_url, auth_cache_s=ttl_s))
    with TestClient(app) as client:
        with app.state.sessions() as session:
            token = create_token(session, "pool", "worker")[1]
        api = Api(client, app, token)
        assert api.post("/leases", {"worker": WORKER}).status_code == 204
        memoized_by = time.monotonic()
        revoke_elsewhere(database_url, "pool")
        assert api.post("/leases", {"worker": WORKER}).status_code == 204, "still memoized"
        time.sleep(max(0.0, memoized_by + ttl_s + 0.05 - time.monotonic()))
        answer = api.post("/leases", {"worker": WORKER})
        assert answer.status_code == 401 and "revoked" in answer.text


def test_without_the_memo_revocation_is_immediate(database_url: str) -> None:
    app = create_app(make_settings(database_url, auth_cache_s=0))
    with TestClient(app) as client:
        with app.state.sessions() as session:
            token = create_token(session, "pool", "worker")[1]
        api = Api(client, app, token)
        assert api.post("/leases", {"worker": WORKER}).status_code == 204
        revoke_elsewhere(database_url, "pool")
        assert api.post("/leases", {"worker": WORKER}).status_code == 401


def test_open_mode_ends_at_once_when_this_process_creates_a_token(database_url: str) -> None:
    app = create_app(make_settings(database_url, auth_cache_s=30))
    with TestClient(app) as client:
        api = Api(client, app)
        assert api.get("/searches").status_code == 200
        admin = api.post("/tokens", {"name": "first", "role": "admin"})
        assert admin.status_code == 201
        assert api.get("/searches").status_code == 401
        token = admin.json()["token"]
        assert api.with_token(token).post("/tokens", {"name": "user", "role": "user"}).status_code == 201
        assert api.with_token(token).post("/tokens/user/revoke").status_code == 200
        assert api.get("/searches").status_code == 401, "revoking never opens it again"


# --- pools, processes ------------------------------------------------------------------------------


@pytest.mark.postgres
def test_an_idle_connection_killed_by_the_server_is_replaced(postgres_dbs: PostgresDatabases) -> None:
    with postgres_dbs.fresh() as url:
        engine = make_engine(make_settings(url, db_ping_after_idle_s=0.05))
        try:
            with engine.connect() as connection:
                pid = connection.scalar(text("SELECT pg_backend_pid()"))
            with postgres_dbs.admin.connect() as admin:
                admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            time.sleep(0.1)
            with engine.connect() as connection:
                assert connection.scalar(text("SELECT pg_backend_pid()")) != pid
        finally:
            engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_serve_with_two_api_processes(sqlite_dbs: SqliteDatabases) -> None:
    with sqlite_dbs.fresh() as url:
        port = free_port()
        env = {
            **os.environ,
            "RANKTUNE_DATABASE_URL": url,
            "RANKTUNE_PORT": str(port),
            "RANKTUNE_API_WORKERS": "2",
        }
        server = subprocess.Popen([RANKTUNE, "serve"], env=env, stderr=subprocess.PIPE, text=True)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.2)
            with httpx.Client(base_url=f"{base}/api/v1", timeout=30) as client:
                submitted = client.post("/searches", json=spec(max_trials=3, parallelism=3))
                assert submitted.status_code == 201, submitted.text
                claimed = {
                    client.post("/leases", json={"worker": WORKER}).json()["trial_id"] for _ in range(3)
                }
                assert len(claimed) == 3
                assert client.post("/leases", json={"worker": WORKER}).status_code == 204
        finally:
            server.terminate()
            _, errors = server.communicate(timeout=30)
        assert "with 2 processes" in errors
