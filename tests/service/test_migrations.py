"""Migrations on SQLite and PostgreSQL: upgrade from empty, no drift against the models, head check."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import Engine, inspect, text

from ranktune.service.app import create_app
from ranktune.service.db.engine import make_engine
from ranktune.service.db.migrate import alembic_config, head_revision, schema_status, upgrade
from ranktune.service.db.models import Base
from ranktune.service.db.types import utcnow
from ranktune.service.settings import Settings
from tests.service.api import make_settings
from tests.service.conftest import databases_for


@pytest.fixture
def empty_url(request: pytest.FixtureRequest, backend: str) -> Iterator[str]:
    with databases_for(request, backend).fresh(migrated=False) as url:
        yield url


def test_upgrade_from_empty_reaches_head_without_drift(empty_url: str) -> None:
    engine = make_engine(Settings(database_url=empty_url))
    try:
        assert schema_status(engine).current is None
        status = upgrade(engine)
        assert status.at_head and status.current == head_revision()
        assert set(inspect(engine).get_table_names()) >= set(Base.metadata.tables)
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": True}
            )
            assert compare_metadata(context, Base.metadata) == []
        assert upgrade(engine).at_head, "upgrading at head is a no-op"
    finally:
        engine.dispose()


def test_downgrade_to_base_and_back(empty_url: str) -> None:
    engine = make_engine(Settings(database_url=empty_url))
    try:
        upgrade(engine)
        config = alembic_config(empty_url)
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
        assert schema_status(engine).current is None
        assert not set(inspect(engine).get_table_names()) & set(Base.metadata.tables)
        assert upgrade(engine).at_head
    finally:
        engine.dispose()


def test_healthz_is_503_when_the_schema_is_behind(empty_url: str) -> None:
    with TestClient(create_app(make_settings(empty_url))) as client:
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json()["revision"] is None and response.json()["head"] == head_revision()


def test_healthz_is_ok_at_head(database_url: str) -> None:
    with TestClient(create_app(make_settings(database_url))) as client:
        body = client.get("/healthz").json()
        assert body == {**body, "status": "ok", "database": "ok", "revision": head_revision()}


def test_healthz_is_503_when_the_database_is_unreachable() -> None:
    url = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    with TestClient(create_app(make_settings(url))) as client:
        response = client.get("/healthz")
        assert response.status_code == 503 and response.json()["database"] == "unreachable"


def _fixture_at_0001(engine: Engine) -> None:
    """A database as revision 0001 left it: a finished search with a succeeded trial and its lease."""
    upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO searches (id, name, spec, state, sites, strategy, budget_params, budget_rank, "
                "max_trials, parallelism, max_attempts, lease_ttl_s, objective_metric, objective_direction, "
                "trials_created, created_at) VALUES (1, 'old', :spec, 'finished', '[]', 'random', 1000, 8, "
                "1, 1, 3, 60.0, 'accuracy', 'maximize', 1, :now)"
            ),
            {"spec": json.dumps({"name": "old", "model": "builtin:tiny-vlm", "task": "builtin:digits-vqa"}),
             "now": utcnow()},
        )  # fmt: skip
        connection.execute(
            text(
                "INSERT INTO trials (id, search_id, number, kind, state, schedule, parameter_count, "
                "proxy_seed, attempt, max_attempts, objective, created_at) "
                "VALUES (1, 1, 0, 'proxy', 'succeeded', '{}', 1000, 0, 1, 3, 0.75, :now)"
            ),
            {"now": utcnow()},
        )


def test_a_database_at_0001_upgrades_keeping_its_rows(empty_url: str) -> None:
    """Every past revision gets a fixture with data; upgrading it must keep every row readable."""
    engine = make_engine(Settings(database_url=empty_url))
    try:
        _fixture_at_0001(engine)
        assert schema_status(engine).current == "0001"
        assert upgrade(engine).at_head
        with engine.connect() as connection:
            row = connection.execute(
                text("SELECT objective, vector, predicted, confirms FROM trials WHERE id = 1")
            ).one()
            assert (
                row.objective == 0.75
                and row.vector is None
                and row.predicted is None
                and row.confirms is None
            )
            search = connection.execute(text("SELECT name, performance_model FROM searches")).one()
            assert search.name == "old" and search.performance_model is None
    finally:
        engine.dispose()
    with TestClient(create_app(make_settings(empty_url))) as client:
        trials = client.get("/api/v1/searches/1/trials").json()["trials"]
        assert [(t["number"], t["objective"], t["predicted"]) for t in trials] == [(0, 0.75, None)]


def _fixture_at_0003(engine: Engine) -> None:
    """Two running searches as revision 0003 left them: three trials queued in the older, two in the
    newer (a claim then took the oldest trial of any search: the older search's three first)."""
    upgrade(engine, "0003")
    spec = {"model": "builtin:tiny-vlm", "task": "builtin:digits-vqa", "strategy": "random"}
    with engine.begin() as connection:
        for search_id, queued in ((1, 3), (2, 2)):
            connection.execute(
                text(
                    "INSERT INTO searches (id, name, spec, state, sites, strategy, budget_params, "
                    "budget_rank, max_trials, parallelism, max_attempts, lease_ttl_s, objective_metric, "
                    "objective_direction, trials_created, created_at) VALUES (:id, :name, :spec, 'running', "
                    "'[]', 'random', 1000, 8, :n, :n, 3, 60.0, 'accuracy', 'maximize', :n, :now)"
                ),
                {"id": search_id, "name": f"old{search_id}", "n": queued, "now": utcnow(),
                 "spec": json.dumps({**spec, "name": f"old{search_id}"})},
            )  # fmt: skip
            for number in range(queued):
                connection.execute(
                    text(
                        "INSERT INTO trials (search_id, number, kind, state, schedule, parameter_count, "
                        "proxy_seed, attempt, max_attempts, created_at) "
                        "VALUES (:search, :number, 'proxy', 'queued', '{}', 1000, 0, 0, 3, :now)"
                    ),
                    {"search": search_id, "number": number, "now": utcnow()},
                )


def test_a_database_at_0003_upgrades_and_its_queued_searches_take_turns(empty_url: str) -> None:
    engine = make_engine(Settings(database_url=empty_url))
    try:
        _fixture_at_0003(engine)
        assert upgrade(engine).at_head
        with engine.connect() as connection:
            orders = connection.execute(text("SELECT search_id, claim_order FROM trials ORDER BY id")).all()
            assert [tuple(row) for row in orders] == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1)]
            assert connection.execute(text("SELECT next_claim_order FROM searches ORDER BY id")).all() == [
                (3,),
                (2,),
            ]
    finally:
        engine.dispose()
    worker = {"name": "w", "device": "cpu", "hostname": "h"}
    with TestClient(create_app(make_settings(empty_url))) as client:
        served = [
            client.post("/api/v1/leases", json={"worker": worker}).json()["search_id"] for _ in range(5)
        ]
        assert served == [1, 2, 1, 2, 1]
        assert client.post("/api/v1/leases", json={"worker": worker}).status_code == 204
