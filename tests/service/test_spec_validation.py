"""Malformed search specs: each is a 4xx naming the field, and writes no row (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ranktune.service.app import create_app
from tests.service.api import SPEC, Api, make_settings, spec
from tests.service.conftest import BACKENDS, databases_for
from tests.service.databases import row_counts


def nested(key: str, **values: Any) -> dict[str, Any]:
    return spec(**{key: {**SPEC[key], **values}})


def raw(old: str, new: str) -> str:
    """The standard spec as JSON text with ``old`` replaced (for NaN/Infinity, which dicts can't send)."""
    text = json.dumps(SPEC)
    assert old in text
    return text.replace(old, new)


def without(*keys: str) -> dict[str, Any]:
    return {k: v for k, v in SPEC.items() if k not in keys}


# (case id, request body: a dict, or raw JSON text, expected loc after "body")
CASES: list[tuple[str, dict[str, Any] | str, list[str | int]]] = [
    ("missing name", without("name"), ["name"]),
    ("missing model", without("model"), ["model"]),
    ("missing task", without("task"), ["task"]),
    ("empty name", spec(name=""), ["name"]),
    ("blank model", spec(model="   "), ["model"]),
    ("unknown top-level field", {**SPEC, "spaec": {}}, ["spaec"]),
    ("unknown method kind", nested("method", kind="qlora"), ["method", "kind"]),
    ("typo inside method", nested("method", rnak=4), ["method", "rnak"]),
    ("dropout out of range", nested("method", dropout=1.5), ["method", "dropout"]),
    ("dmlora options on lora", nested("method", dmlora={"branches": 4}), ["method"]),
    ("NaN in dmlora options", raw('"lora"}', '"dmlora", "dmlora": {"x": NaN}}'), ["method", "dmlora", "x"]),
    ("budget with rank and params", spec(budget={"rank": 8, "params": 1000}), ["budget"]),
    ("empty budget", spec(budget={}), ["budget"]),
    ("budget rank zero", spec(budget={"rank": 0}), ["budget", "rank"]),
    ("budget rank off the grid", spec(budget={"rank": 10}), ["budget", "rank"]),
    ("budget too small", spec(budget={"params": 10}), ["budget"]),
    ("typo inside budget", spec(budget={"rank": 8, "ranks": 4}), ["budget", "ranks"]),
    ("empty grid", nested("space", grid=[]), ["space", "grid"]),
    ("negative grid rank", nested("space", grid=[-1, 2, 8]), ["space", "grid"]),
    ("grid as a string", nested("space", grid="0,2,4,8"), ["space", "grid"]),
    ("unknown tower", nested("space", towers=["audio"]), ["space", "towers", 0]),
    ("tower twice", nested("space", towers=["vision", "vision"]), ["space", "towers"]),
    ("no towers", nested("space", towers=[]), ["space", "towers"]),
    ("zero layer groups", nested("space", layer_groups=0), ["space", "layer_groups"]),
    ("unknown strategy", spec(strategy="grid"), ["strategy"]),
    ("zero max_trials", spec(max_trials=0), ["max_trials"]),
    ("parallelism as a string", spec(parallelism="4"), ["parallelism"]),
    ("negative proxy steps", nested("proxy", steps=-1), ["proxy", "steps"]),
    ("NaN learning rate", raw('"lr": 0.001', '"lr": NaN'), ["proxy", "lr"]),
    ("typo inside proxy", nested("proxy", epochs=3), ["proxy", "epochs"]),
    ("float batch size", nested("proxy", batch_size=32.5), ["proxy", "batch_size"]),
    ("unknown direction", nested("objective", direction="up"), ["objective", "direction"]),
    ("empty metric name", nested("objective", metric=""), ["objective", "metric"]),
    ("zero max_attempts", spec(max_attempts=0), ["max_attempts"]),
    ("infinite lease ttl", raw('"lease_ttl_s": 120', '"lease_ttl_s": Infinity'), ["lease_ttl_s"]),
    ("unknown built-in model", spec(model="builtin:nope"), ["model"]),
    ("unknown built-in task", spec(task="builtin:nope"), ["task"]),
    ("task that is no file", spec(task="/no/such/data.jsonl"), ["task"]),
    ("task that does not fit the model", spec(task="builtin:minilm-topics"), ["model"]),
    ("model that is no model", spec(model="/no/such/model/dir"), ["model"]),
    ("body is not JSON", "{not json", []),
    ("body is a list", json.dumps([SPEC]), []),
]  # fmt: skip


@pytest.fixture(scope="module", params=BACKENDS)
def module_api(request: pytest.FixtureRequest) -> Iterator[tuple[Api, str]]:
    with (
        databases_for(request, request.param).fresh() as url,
        TestClient(create_app(make_settings(url))) as client,
    ):
        yield Api(client), url


@pytest.mark.parametrize(("body", "loc"), [pytest.param(b, loc, id=name) for name, b, loc in CASES])
def test_malformed_spec_names_the_field_and_writes_nothing(
    module_api: tuple[Api, str], body: dict[str, Any] | str, loc: list[str | int]
) -> None:
    api, url = module_api
    before = row_counts(url)
    text = body if isinstance(body, str) else json.dumps(body)
    response = api.post("/searches", raw=text)
    assert 400 <= response.status_code < 500, response.text
    detail = response.json()["detail"]
    assert detail and all(item["msg"] for item in detail)
    assert detail[0]["loc"][0] == "body"
    assert detail[0]["loc"][1 : 1 + len(loc)] == loc, detail
    assert row_counts(url) == before


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 20


def test_a_good_spec_after_the_bad_ones_writes_rows(module_api: tuple[Api, str]) -> None:
    api, url = module_api
    before = row_counts(url)
    api.submit()
    after = row_counts(url)
    assert after["searches"] == before["searches"] + 1 and after["trials"] == before["trials"] + 4


def test_perfmodel_screens_by_default_but_a_stored_search_keeps_what_it_was_created_with() -> None:
    from ranktune.service.schemas.spec import SearchCreate

    default = {key: value for key, value in SPEC.items() if key != "strategy"}  # perfmodel, the default
    assert SearchCreate.model_validate(default).screen is True
    stored = {**SearchCreate.model_validate(default).model_dump(), "screen": None}  # created before then
    assert SearchCreate.model_validate(stored, context={"stored": True}).screen is None
    assert SearchCreate.model_validate({**SPEC, "strategy": "random"}).screen is None


def test_confirmation_rechecks_three_by_default_but_a_stored_search_keeps_none() -> None:
    from ranktune.service.schemas.spec import DEFAULT_RECHECK, SearchCreate

    confirmed = {**SPEC, "confirm": {"top_k": 1, "steps": 50, "seeds": 2}}
    assert SearchCreate.model_validate(confirmed).confirm.recheck == DEFAULT_RECHECK == 3
    assert SearchCreate.model_validate({**SPEC, "confirm": {"recheck": 0}}).confirm.recheck == 0
    stored = {**confirmed}  # a spec written before rechecks existed has no key
    assert SearchCreate.model_validate(stored, context={"stored": True}).confirm.recheck == 0
    assert SearchCreate.model_validate(SPEC).confirm is None  # no confirmation, nothing to recheck
