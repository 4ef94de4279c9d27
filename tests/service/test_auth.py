"""Bearer tokens and roles: the matrix of endpoints × callers, open mode, token hygiene."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from ranktune.service.app import create_app
from ranktune.service.db.engine import begin_write
from ranktune.service.db.models import ApiToken
from ranktune.service.db.repository.tokens import create_token, revoke_token
from ranktune.service.db.types import utcnow
from ranktune.service.errors import Conflict
from tests.service.api import WORKER, Api, make_settings, spec

LEASE = "00000000-0000-0000-0000-000000000000"
# (method, path, body, the role the endpoint needs)
ENDPOINTS: list[tuple[str, str, Any, str]] = [
    ("POST", "/searches", spec(), "user"),
    ("GET", "/searches", None, "user"),
    ("GET", "/searches/1", None, "user"),
    ("POST", "/searches/1/cancel", None, "user"),
    ("GET", "/searches/1/trials", None, "user"),
    ("GET", "/searches/1/best", None, "user"),
    ("GET", "/searches/1/export/peft", None, "user"),
    ("GET", "/workers", None, "user"),
    ("POST", "/leases", {"worker": WORKER}, "worker"),
    ("POST", f"/leases/{LEASE}/heartbeat", {"attempt": 1, "step": 1}, "worker"),
    ("POST", f"/leases/{LEASE}/complete", {"attempt": 1, "metrics": {"accuracy": 0.5}}, "worker"),
    ("POST", f"/leases/{LEASE}/fail", {"attempt": 1, "reason": "x"}, "worker"),
    ("POST", "/tokens", {"name": "new", "role": "user"}, "admin"),
    ("GET", "/tokens", None, "admin"),
    ("POST", "/tokens/nobody/revoke", None, "admin"),
]
ALLOWED = {"admin": {"admin", "user", "worker"}, "user": {"user"}, "worker": {"worker"}}


@pytest.fixture
def tokens(app: FastAPI) -> dict[str, str]:
    with app.state.sessions() as session:
        made = {role: create_token(session, f"{role}-token", role)[1] for role in ("admin", "user", "worker")}
        made["revoked"] = create_token(session, "old-token", "admin")[1]
        revoke_token(session, "old-token")
    return made


def call(api: Api, token: str | None, method: str, path: str, body: Any) -> int:
    return api.with_token(token).request(method, f"/api/v1{path}", body).status_code


@pytest.mark.parametrize(("method", "path", "body", "needs"), ENDPOINTS)
def test_auth_matrix(api: Api, tokens: dict[str, str], method: str, path: str, body: Any, needs: str) -> None:
    assert call(api, None, method, path, body) == 401
    assert call(api, tokens["revoked"], method, path, body) == 401
    assert call(api, "rt_" + "x" * 43, method, path, body) == 401
    for role in ("user", "worker"):
        status = call(api, tokens[role], method, path, body)
        if needs in ALLOWED[role]:
            assert status not in (401, 403), (role, status)
        else:
            assert status == 403, (role, status)
    assert call(api, tokens["admin"], method, path, body) not in (401, 403)


def test_errors_name_the_header(api: Api, tokens: dict[str, str]) -> None:
    missing = api.request("GET", "/api/v1/searches")
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert missing.json()["detail"][0]["loc"] == ["header", "Authorization"]
    basic = api.client.get("/api/v1/searches", headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert basic.status_code == 401 and "Bearer" in basic.json()["detail"][0]["msg"]
    revoked = api.with_token(tokens["revoked"]).get("/searches")
    assert "revoked" in revoked.json()["detail"][0]["msg"]
    wrong = api.with_token(tokens["worker"]).get("/searches")
    assert wrong.status_code == 403 and "worker" in wrong.json()["detail"][0]["msg"]


def test_unauthenticated_bad_body_is_401_not_422(api: Api, tokens: dict[str, str]) -> None:
    assert api.post("/searches", {"nonsense": True}).status_code == 401


def test_health_and_metrics_need_no_token(api: Api, tokens: dict[str, str]) -> None:
    for path in ("/healthz", "/metrics", "/api/v1/healthz", "/api/v1/metrics"):
        assert api.request("GET", path).status_code == 200, path
    assert api.request("GET", "/healthz").json()["open_mode"] is False


def test_tokens_are_stored_hashed(app: FastAPI, tokens: dict[str, str]) -> None:
    with app.state.sessions() as session:
        hashes = set(session.scalars(select(ApiToken.token_hash)))
    for token in tokens.values():
        assert token.startswith("rt_") and len(token) == 46
        assert hashlib.sha256(token.encode()).hexdigest() in hashes and token not in hashes


def test_admin_creates_lists_and_revokes_tokens_over_rest(api: Api, tokens: dict[str, str]) -> None:
    admin = api.with_token(tokens["admin"])
    created = admin.post("/tokens", {"name": "ci", "role": "worker"})
    assert created.status_code == 201
    new = created.json()["token"]
    assert api.with_token(new).post("/leases", {"worker": WORKER}).status_code == 204
    assert admin.post("/tokens", {"name": "ci", "role": "user"}).status_code == 409
    assert admin.post("/tokens", {"name": "x", "role": "root"}).json()["detail"][0]["loc"] == ["body", "role"]
    listed = admin.get("/tokens").json()["tokens"]
    assert {t["name"] for t in listed} == {"admin-token", "user-token", "worker-token", "old-token", "ci"}
    assert all("token" not in t for t in listed)
    assert admin.post("/tokens/ci/revoke").json()["revoked_at"] is not None
    assert api.with_token(new).post("/leases", {"worker": WORKER}).status_code == 401


def test_open_mode_on_loopback_until_the_first_token(api: Api, app: FastAPI) -> None:
    assert api.get("/searches").status_code == 200
    assert api.request("GET", "/healthz").json()["open_mode"] is True
    with app.state.sessions() as session:
        create_token(session, "first", "user")
    assert api.get("/searches").status_code == 401, "open mode ends with the first token"
    with app.state.sessions() as session:
        revoke_token(session, "first")
    assert api.get("/searches").status_code == 401, "and never comes back, though no token is active"
    assert api.request("GET", "/healthz").json()["open_mode"] is False


def test_tokens_revoked_over_rest_never_reopen_the_server(api: Api) -> None:
    first = api.post("/tokens", {"name": "first", "role": "admin"})
    assert first.status_code == 201, "in open mode, the first token is created over REST"
    admin = api.with_token(first.json()["token"])
    for name, role in (("user", "user"), ("second", "admin")):
        assert admin.post("/tokens", {"name": name, "role": role}).status_code == 201
    assert admin.post("/tokens/user/revoke").status_code == 200
    assert admin.post("/tokens/first/revoke").status_code == 200, "another admin token is active"
    assert api.get("/searches").status_code == 401


def test_the_last_active_admin_token_cannot_be_revoked(api: Api, app: FastAPI) -> None:
    with app.state.sessions() as session:
        token = create_token(session, "root", "admin")[1]
        create_token(session, "old-root", "admin")
        revoke_token(session, "old-root")
        create_token(session, "worker", "worker")
    admin = api.with_token(token)
    refused = admin.post("/tokens/root/revoke")
    assert refused.status_code == 409
    detail = refused.json()["detail"][0]
    assert detail["loc"] == ["path", "name"] and "last active admin token" in detail["msg"]
    assert "ranktune token create --role admin" in detail["msg"]
    assert admin.get("/tokens").status_code == 200, "the token still works"
    assert admin.post("/tokens/worker/revoke").status_code == 200, "other roles may all go"
    assert admin.post("/tokens", {"name": "root-2", "role": "admin"}).status_code == 201
    assert admin.post("/tokens/root/revoke").status_code == 200, "with another admin it may go"
    assert admin.get("/tokens").status_code == 401
    with app.state.sessions() as session, pytest.raises(Conflict, match="last active admin"):
        revoke_token(session, "root-2")  # the CLI's path: the same rule


def test_two_admins_revoking_each_other_at_once_leave_one(app: FastAPI) -> None:
    """One revocation holds the admin rows (as revoke_token does) while the other starts: the second
    waits for it (PostgreSQL's row locks; SQLite's single writer), then sees the last admin."""
    with app.state.sessions() as session:
        create_token(session, "a", "admin")
        create_token(session, "b", "admin")
    outcome: list[BaseException | None] = []
    with app.state.sessions() as first:
        begin_write(first)
        first.scalars(select(ApiToken).where(ApiToken.role == "admin").with_for_update()).all()

        def revoke_b() -> None:
            with app.state.sessions() as second:
                try:
                    revoke_token(second, "b")
                    outcome.append(None)
                except Conflict as e:
                    outcome.append(e)

        thread = threading.Thread(target=revoke_b)
        thread.start()
        thread.join(timeout=0.5)
        assert thread.is_alive(), "the second revocation waits for the first"
        first.execute(update(ApiToken).where(ApiToken.name == "a").values(revoked_at=utcnow()))
        first.commit()
    thread.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], Conflict)
    with app.state.sessions() as session:
        active = session.scalars(select(ApiToken.name).where(ApiToken.revoked_at.is_(None))).all()
    assert active == ["b"]


@pytest.mark.parametrize(("mode", "open_before", "open_after"), [("on", True, True), ("off", False, False)])
def test_open_mode_setting(database_url: str, mode: str, open_before: bool, open_after: bool) -> None:
    app = create_app(make_settings(database_url, open_mode=mode))
    with TestClient(app) as client:
        api = Api(client, app)
        assert (api.request("GET", "/api/v1/searches").status_code == 200) is open_before
        assert client.get("/healthz").json()["open_mode"] is open_before
        with app.state.sessions() as session:
            create_token(session, "first", "user")
        assert (api.request("GET", "/api/v1/searches").status_code == 200) is open_after
        assert client.get("/healthz").json()["open_mode"] is open_after


@pytest.mark.parametrize("mode", ["auto", "on"])
def test_no_open_mode_off_loopback(database_url: str, mode: str) -> None:
    app = create_app(make_settings(database_url, host="0.0.0.0", open_mode=mode))
    with TestClient(app) as client:
        assert client.get("/api/v1/searches").status_code == 401
        assert client.get("/healthz").json()["open_mode"] is False
