"""Bad input from a hostile client: ids and offsets no column can hold, free-form JSON nested too deep
or too large, integers beyond their columns, NUL characters, bodies that are not JSON. Each is a 4xx
naming the field, never a 500 and never a written row (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from ranktune.service.app import create_app
from ranktune.service.db.models import Trial
from ranktune.service.schemas.json_bounds import MAX_JSON_DEPTH
from tests.service.api import WORKER, Api, make_settings, spec
from tests.service.databases import row_counts

INT32_MAX, INT64_MAX = 2**31 - 1, 2**63 - 1
SEARCH_ROUTES = [
    ("GET", "/searches/{}"),
    ("POST", "/searches/{}/cancel"),
    ("GET", "/searches/{}/trials"),
    ("GET", "/searches/{}/best"),
    ("GET", "/searches/{}/export/peft"),
]
BAD_IDS = [
    "99999999999999999999999",
    str(INT64_MAX + 1),
    str(INT64_MAX),
    str(INT32_MAX + 1),
    "0",
    "-1",
    "1.5",
]


def nest(levels: int) -> Any:
    """A value of ``levels`` arrays, one inside the other."""
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def detail(response: httpx.Response, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text
    first: dict[str, Any] = response.json()["detail"][0]
    return first


def dmlora(options: dict[str, Any]) -> dict[str, Any]:
    return spec(method={"kind": "dmlora", "dmlora": options})


# --- ids and offsets -------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "route"), SEARCH_ROUTES)
def test_search_ids_no_column_can_hold_are_422_on_the_path(api: Api, method: str, route: str) -> None:
    for bad in BAD_IDS:
        answer = api.request(method, "/api/v1" + route.format(bad))
        assert detail(answer)["loc"] == ["path", "search_id"], (bad, answer.text)
    largest = api.request(method, "/api/v1" + route.format(INT32_MAX))
    assert detail(largest, 404)["loc"] == ["path", "search_id"]


def test_offsets_beyond_int64_are_422_and_int64_max_is_an_empty_page(api: Api) -> None:
    search = api.submit()
    for path in ("/searches", f"/searches/{search['id']}/trials"):
        assert detail(api.get(f"{path}?offset={INT64_MAX + 1}"))["loc"] == ["query", "offset"]
        assert detail(api.get(f"{path}?offset=-1"))["loc"] == ["query", "offset"]
        page = api.get(f"{path}?offset={INT64_MAX}")
        assert page.status_code == 200 and next(iter(page.json().values())) == []
        assert detail(api.get(f"{path}?limit={INT64_MAX + 1}"))["loc"] == ["query", "limit"]


def test_path_strings_with_nul_are_422(api: Api) -> None:
    assert detail(api.post("/tokens/a%00b/revoke"))["loc"] == ["path", "name"]
    failed = api.post("/leases/a%00b/fail", {"attempt": 1, "reason": "x"})
    assert detail(failed)["loc"] == ["path", "lease_id"]


# --- free-form JSON: depth -------------------------------------------------------------------------


@pytest.fixture
def job(api: Api) -> dict[str, Any]:
    api.submit()
    claimed = api.claim()
    assert claimed is not None
    return claimed


def test_method_options_nested_too_deep_are_422_and_write_nothing(api: Api, database_url: str) -> None:
    before = row_counts(database_url)
    # The options object is the first level, so "x" may hold MAX_JSON_DEPTH - 1 more.
    refused = api.post("/searches", dmlora({"x": nest(MAX_JSON_DEPTH)}))
    error = detail(refused)
    assert error["loc"] == ["body", "method", "dmlora", "x"]
    assert f"nested deeper than {MAX_JSON_DEPTH} levels" in error["msg"]
    far = api.post("/searches", dmlora({"x": nest(250)}))
    assert detail(far)["loc"] == ["body", "method", "dmlora", "x"]
    assert row_counts(database_url) == before
    assert api.post("/searches", dmlora({"x": nest(MAX_JSON_DEPTH - 1)})).status_code == 201
    listed = api.get("/searches")
    assert listed.json()["searches"][0]["spec"]["method"]["dmlora"] == {"x": nest(MAX_JSON_DEPTH - 1)}
    job = api.claim()
    assert job is not None and job["method"]["dmlora"] == {"x": nest(MAX_JSON_DEPTH - 1)}


def test_site_stats_nested_too_deep_are_422(api: Api, job: dict[str, Any]) -> None:
    error = detail(api.heartbeat(job, site_stats={"q": nest(MAX_JSON_DEPTH)}))
    assert error["loc"] == ["body", "site_stats", "q"]
    with api.session() as session:
        trial = session.get(Trial, job["trial_id"])
        assert trial is not None and trial.site_stats is None and trial.step is None
    assert api.heartbeat(job, site_stats={"q": nest(MAX_JSON_DEPTH - 1)}).status_code == 200


def test_a_timeline_nested_too_deep_is_422_and_the_trial_stays_running(api: Api, job: dict[str, Any]) -> None:
    error = detail(api.complete(job, timeline=[{"a": nest(MAX_JSON_DEPTH - 1)}]))
    assert error["loc"] == ["body", "timeline", 0]
    assert "a[0]" in error["msg"]
    assert api.trials(job["search_id"])[0]["state"] == "running"
    done = api.complete(job, timeline=[nest(MAX_JSON_DEPTH - 1)])
    assert done.status_code == 200, done.text
    assert api.complete(job, timeline=[nest(MAX_JSON_DEPTH - 1)]).status_code == 200, "a resend is fine too"
    assert api.trials(job["search_id"])[0]["timeline"] == [nest(MAX_JSON_DEPTH - 1)]


def test_non_finite_numbers_deep_inside_are_422_naming_the_place(api: Api, job: dict[str, Any]) -> None:
    body = '{"attempt": 1, "step": 1, "site_stats": {"q": {"norm": [1.0, NaN]}}}'
    error = detail(api.post(f"/leases/{job['lease_id']}/heartbeat", raw=body))
    assert error["loc"] == ["body", "site_stats", "q"] and "norm[1]: must be a finite number" in error["msg"]


# --- free-form JSON: size --------------------------------------------------------------------------

FIELD_BYTES = 2048
BIG = "x" * (FIELD_BYTES + 1)
POINTS = [{"step": i, "loss": 1.0, "metric": 0.5} for i in range(100)]  # about 4 kB of JSON


@pytest.fixture
def small(database_url: str) -> Iterator[Api]:
    app = create_app(make_settings(database_url, max_json_field_bytes=FIELD_BYTES))
    with TestClient(app) as client:
        yield Api(client, app)


def _claimed(api: Api) -> dict[str, Any]:
    api.submit()
    job = api.claim()
    assert job is not None
    return job


SIZE_CASES: list[tuple[str, Callable[[Api], httpx.Response], list[str]]] = [
    ("method.dmlora", lambda api: api.post("/searches", dmlora({"x": BIG})), ["method", "dmlora"]),
    ("site_stats", lambda api: api.heartbeat(_claimed(api), site_stats={"q": BIG}), ["site_stats"]),
    ("measurements", lambda api: api.heartbeat(_claimed(api), measurements=POINTS), ["measurements"]),
    ("timeline", lambda api: api.complete(_claimed(api), timeline=[BIG]), ["timeline"]),
    (
        "metrics",
        lambda api: api.post(
            f"/leases/{_claimed(api)['lease_id']}/complete",
            {"attempt": 1, "metrics": {f"accuracy{i}": 0.5 for i in range(200)} | {"accuracy": 0.5}},
        ),
        ["metrics"],
    ),
]


@pytest.mark.parametrize(
    ("send", "loc"), [pytest.param(send, loc, id=name) for name, send, loc in SIZE_CASES]
)
def test_free_form_fields_above_the_size_setting_are_422_naming_the_field(
    small: Api, send: Callable[[Api], httpx.Response], loc: list[str]
) -> None:
    error = detail(send(small))
    assert error["loc"] == ["body", *loc]
    assert "RANKTUNE_MAX_JSON_FIELD_BYTES" in error["msg"] and f"{FIELD_BYTES:,}" in error["msg"]
    trials = small.get("/searches/1/trials").json().get("trials", [])
    assert all(t["state"] in ("queued", "running") for t in trials), "nothing was recorded"


def test_the_default_field_limit_is_one_mebibyte(api: Api, database_url: str) -> None:
    before = row_counts(database_url)
    error = detail(api.post("/searches", dmlora({"x": "x" * (1 << 20)})))
    assert error["loc"] == ["body", "method", "dmlora"] and "1,048,576" in error["msg"]
    assert row_counts(database_url) == before
    assert api.post("/searches", dmlora({"x": "x" * 500_000})).status_code == 201


# --- integers and strings that their columns cannot hold -------------------------------------------


def test_integers_beyond_their_columns_are_422(api: Api, job: dict[str, Any]) -> None:
    assert detail(api.heartbeat(job, step=INT32_MAX + 1))["loc"] == ["body", "step"]
    assert detail(api.heartbeat(job, total_steps=INT32_MAX + 1))["loc"] == ["body", "total_steps"]
    points = [{"step": INT32_MAX + 1, "loss": 1.0}]
    assert detail(api.heartbeat(job, measurements=points))["loc"] == ["body", "measurements", 0, "step"]
    for field in ("trainable_params", "adapter_params", "peak_memory_bytes"):
        assert detail(api.complete(job, **{field: INT64_MAX + 1}))["loc"] == ["body", field]
    assert api.heartbeat(job, step=INT32_MAX, total_steps=INT32_MAX).status_code == 200
    done = api.complete(job, trainable_params=INT64_MAX, peak_memory_bytes=INT64_MAX)
    assert done.status_code == 200, done.text
    assert done.json()["trial"]["peak_memory_bytes"] == INT64_MAX


def test_nul_characters_are_422(api: Api, job: dict[str, Any]) -> None:
    claim = api.post("/leases", {"worker": {**WORKER, "device": "cuda:0\x00"}})
    assert detail(claim)["loc"] == ["body", "worker", "device"]
    claim = api.post("/leases", {"worker": {**WORKER, "hostname": "node\x00"}})
    assert detail(claim)["loc"] == ["body", "worker", "hostname"]
    assert detail(api.complete(job, device="cpu\x00"))["loc"] == ["body", "device"]
    bad_metric = {"attempt": 1, "metrics": {"accuracy": 0.5, "a\x00": 1.0}}
    assert detail(api.post(f"/leases/{job['lease_id']}/complete", bad_metric))["loc"] == ["body", "metrics"]
    assert detail(api.fail(job, reason="out of memory\x00"))["loc"] == ["body", "reason"]
    assert api.fail(job, reason="out of memory\nat step 3").status_code == 200


# --- bodies that are not JSON ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b'{"name": "\x80"}', b"[" * 100_000, b'{"name": ' * 50_000],
    ids=["not utf-8", "nested past the parser", "objects nested past the parser"],
)
def test_bodies_that_cannot_be_parsed_are_400_in_the_error_shape(
    api: Api, database_url: str, body: bytes
) -> None:
    before = row_counts(database_url)
    response = api.client.post("/api/v1/searches", content=body, headers={"Content-Type": "application/json"})
    error = detail(response, 400)
    assert error["loc"] == ["body"] and "cannot be read as JSON" in error["msg"]
    assert row_counts(database_url) == before
