"""Reads never fail on a stored value: rows written before the request bounds existed may hold JSON
nested deeper than a response can be serialized (pydantic stops near 255 levels). They are written
here straight into the database, as such a version left them, and every read still answers 200 with
the excess replaced by a marker (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from ranktune.service.db.engine import make_engine
from ranktune.service.db.models import Search, Trial
from ranktune.service.schemas.json_bounds import MAX_JSON_DEPTH, OMITTED, READ_DEPTH, within_depth
from ranktune.service.settings import Settings
from tests.service.api import Api

DEEP = 300


def nest(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


def depth(value: Any) -> int:
    """Containers nested in ``value`` (iteratively: the values here are deeper than is comfortable)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
        deepest = max(deepest, level)
    return deepest


def contains_marker(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if item == OMITTED:
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def write_as_an_old_version(database_url: str, table: Any, row_id: int, **values: Any) -> None:
    engine = make_engine(Settings(database_url=database_url))
    try:
        with engine.begin() as connection:
            connection.execute(update(table).where(table.c.id == row_id).values(**values))
    finally:
        engine.dispose()


def test_reads_answer_200_on_rows_nested_too_deep(api: Api, database_url: str) -> None:
    search = api.submit(method={"kind": "dmlora", "dmlora": {"branches": 2}})
    job = api.claim()
    assert job is not None and api.complete(job, accuracy=0.7).status_code == 200
    stored_spec = {**search["spec"], "method": {"kind": "dmlora", "dmlora": {"x": nest(DEEP)}}}
    write_as_an_old_version(
        database_url, Search.__table__, search["id"], spec=stored_spec, performance_model=nest(DEEP)
    )
    write_as_an_old_version(
        database_url,
        Trial.__table__,
        job["trial_id"],
        timeline=[nest(DEEP)],
        metrics={"accuracy": 0.7, "extra": nest(DEEP)},
        curve=[nest(DEEP)],
    )

    listed = api.get("/searches")
    assert listed.status_code == 200, listed.text
    one = api.search(search["id"])
    assert one == listed.json()["searches"][0]
    assert contains_marker(one["spec"]["method"]["dmlora"]) and contains_marker(one["performance_model"])
    assert depth(one) == READ_DEPTH + 1  # the search object around its cut fields

    trials = api.trials(search["id"], schedules=True)
    done = next(t for t in trials if t["id"] == job["trial_id"])
    assert done["metrics"]["accuracy"] == 0.7
    for field in ("timeline", "curve", "metrics"):
        assert contains_marker(done[field]), field
    best = api.get(f"/searches/{search['id']}/best")
    assert best.status_code == 200 and contains_marker(best.json()["trial"]["timeline"])
    assert api.get(f"/searches/{search['id']}/export/peft").status_code == 200

    resent = api.complete(job, accuracy=0.7)
    assert resent.status_code == 200 and contains_marker(resent.json()["trial"]["timeline"])

    # A worker claiming the next trial gets the options cut to what a request may carry now.
    next_job = api.claim()
    assert next_job is not None
    options = next_job["method"]["dmlora"]
    assert contains_marker(options) and depth(options) == MAX_JSON_DEPTH
    assert api.heartbeat(next_job).status_code == 200


def test_within_depth_keeps_shallow_values_as_they_are() -> None:
    shallow = {"a": [1, {"b": 2}], "c": "x"}
    assert within_depth(shallow) is shallow
    assert within_depth(nest(3), 2) == {"a": {"a": OMITTED}}
    mixed = [nest(1), nest(5)]
    cut = within_depth(mixed, 3)
    assert cut == [nest(1), {"a": {"a": OMITTED}}] and cut[0] is mixed[0] and mixed[1] == nest(5)
