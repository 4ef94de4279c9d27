"""Every 4xx the server answers is in the OpenAPI document for that operation, in the shape it
documents. The test walks the document and sends each operation what a hostile client would: no
token, each role's token, ids and offsets beyond their columns, NUL in strings, bodies that are not
JSON, nested past the parser, or above the body limit (SQLite and PostgreSQL)."""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from ranktune.service.app import create_app
from ranktune.service.db.repository.tokens import create_token
from ranktune.service.schemas.common import ErrorResponse
from tests.service.api import WORKER, Api, make_settings, spec

LIMIT = 64 * 1024
# A body each operation accepts (when the state allows); an operation missing here fails the test.
BODIES: dict[tuple[str, str], Any] = {
    ("post", "/api/v1/searches"): spec(),
    ("post", "/api/v1/leases"): {"worker": WORKER},
    ("post", "/api/v1/leases/{lease_id}/heartbeat"): {"attempt": 1, "step": 1},
    ("post", "/api/v1/leases/{lease_id}/complete"): {"attempt": 1, "metrics": {"accuracy": 0.5}},
    ("post", "/api/v1/leases/{lease_id}/fail"): {"attempt": 1, "reason": "x"},
    ("post", "/api/v1/tokens"): {"name": "new", "role": "user"},
}


def adapter_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("adapter_config.json", json.dumps({"r": 8, "rank_pattern": {}}))
        zipped.writestr("adapter_model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    return buffer.getvalue()


# Operations whose body is not JSON: the body and its content type.
RAW_BODIES: dict[tuple[str, str], tuple[bytes, str]] = {
    ("put", "/api/v1/leases/{lease_id}/adapter"): (adapter_zip(), "application/zip"),
    ("put", "/api/v1/leases/{lease_id}/checkpoint"): (b"a training state", "application/octet-stream"),
}
BAD_BODIES: list[bytes] = [
    b"{not json",
    b'{"name": "\x80"}',  # not UTF-8
    b"[" * 5000,  # nested past the JSON parser
    b"[]",
    b"{}",
    b'{"unknown": 1}',
    b" " * (LIMIT + 1),  # above the body limit
]
BAD_INTEGERS = ["99999999999999999999999", str(2**63), str(2**31), "0", "-1", "x"]
BAD_STRINGS = ["a%00b", "x" * 300]


class Probe:
    """Sends requests and checks each answer against the operation's documented responses."""

    def __init__(self, client: httpx.Client, operation: dict[str, Any], method: str) -> None:
        self.client, self.operation, self.method = client, operation, method
        self.seen: set[int] = set()

    def send(
        self, path: str, token: str | None, body: bytes | None = None, query: str = "", content_type: str = ""
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        url = path + (f"?{query}" if query else "")
        response = self.client.request(self.method, url, content=body, headers=headers)
        status = response.status_code
        where = f"{self.method.upper()} {url[:120]} -> {status}: {response.text[:300]}"
        assert status < 500, where
        documented = self.operation["responses"]
        assert str(status) in documented, f"undocumented {where}; documented: {sorted(documented)}"
        self.seen.add(status)
        if status >= 400:
            ref = documented[str(status)]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/ErrorResponse"), where
            ErrorResponse.model_validate_json(response.content)


@pytest.fixture
def setup(database_url: str) -> Iterator[tuple[TestClient, dict[str, str], dict[str, str]]]:
    app = create_app(make_settings(database_url, max_body_bytes=LIMIT, max_adapter_bytes=LIMIT))
    with TestClient(app) as client:
        with app.state.sessions() as session:
            tokens = {role: create_token(session, role, role)[1] for role in ("admin", "user", "worker")}
        api = Api(client, app)
        search = api.with_token(tokens["user"]).submit()
        job = api.with_token(tokens["worker"]).claim()
        assert job is not None
        # Path values that exist: operations then get past "not found" to their own checks.
        values = {"search_id": str(search["id"]), "lease_id": job["lease_id"], "name": "admin"}
        yield client, tokens, values


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                yield path, method, operation


def fill(path: str, values: dict[str, str], **override: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: override.get(m.group(1), values[m.group(1)]), path)


def test_every_answer_to_hostile_requests_is_documented(
    setup: tuple[TestClient, dict[str, str], dict[str, str]],
) -> None:
    client, tokens, values = setup
    document = client.get("/openapi.json").json()
    seen: set[int] = set()
    for path, method, operation in operations(document):
        probe = Probe(client, operation, method)
        has_body = "requestBody" in operation
        raw = RAW_BODIES.get((method, path))
        known = (method, path) in BODIES or raw is not None
        assert not has_body or known, f"add a body for {method} {path} to BODIES or RAW_BODIES"
        good: bytes | None = None
        content_type = ""
        if raw is not None:
            good, content_type = raw
        elif has_body:
            good = json.dumps(BODIES[(method, path)]).encode()
        target = fill(path, values)
        for token in (None, "rt_" + "x" * 43, tokens["worker"], tokens["user"], tokens["admin"]):
            probe.send(target, token, good, query="attempt=1" if raw else "", content_type=content_type)
        admin = tokens["admin"]
        for parameter in operation.get("parameters", []):
            name, kind = parameter["name"], parameter["schema"].get("type")
            bad_values = {"integer": BAD_INTEGERS, "boolean": ["maybe"]}.get(kind, BAD_STRINGS)
            for bad in bad_values:
                if parameter["in"] == "path":
                    probe.send(fill(path, values, **{name: bad}), admin, good)
                else:
                    probe.send(target, admin, good, query=f"{name}={bad}")
        for bad_body in BAD_BODIES if has_body else [b" " * (LIMIT + 1)]:
            probe.send(target, admin, bad_body)
        assert 413 in probe.seen, f"{method} {path}: the body limit was not reached"
        seen |= probe.seen
    assert {400, 401, 403, 404, 409, 413, 422} <= seen, "the probes reach every kind of error"


def test_generic_errors_follow_from_what_an_operation_takes(
    setup: tuple[TestClient, dict[str, str], dict[str, str]],
) -> None:
    client, _, _ = setup
    document = client.get("/openapi.json").json()
    for path, method, operation in operations(document):
        documented = set(operation["responses"])
        assert "413" in documented, (method, path)
        if "requestBody" in operation:
            assert {"400", "422"} <= documented, (method, path)
        if operation.get("security"):
            assert {"401", "403", "503"} <= documented, (method, path)
        if "{" in path:
            assert {"404", "422"} <= documented, (method, path)
    cancel = document["paths"]["/api/v1/searches/{search_id}/cancel"]["post"]
    assert {"404", "409"} <= set(cancel["responses"])
    search_id = next(p for p in cancel["parameters"] if p["name"] == "search_id")["schema"]
    assert (search_id["minimum"], search_id["maximum"]) == (1, 2**31 - 1)
