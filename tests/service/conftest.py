"""Fixtures: a fresh, migrated database per test on SQLite and on PostgreSQL, and clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from ranktune.service.app import create_app
from ranktune.service.settings import Settings
from tests.service.api import Api, make_settings
from tests.service.databases import PostgresDatabases, SqliteDatabases, postgres_available

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def postgres_dbs() -> Iterator[PostgresDatabases]:
    reason = postgres_available()
    if reason is not None:
        pytest.skip(reason)
    databases = PostgresDatabases(ahead=True)
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture(scope="session")
def sqlite_dbs(tmp_path_factory: pytest.TempPathFactory) -> SqliteDatabases:
    return SqliteDatabases(tmp_path_factory.mktemp("sqlite"))


def databases_for(request: pytest.FixtureRequest, backend: str) -> PostgresDatabases | SqliteDatabases:
    fixture = "postgres_dbs" if backend == "postgresql" else "sqlite_dbs"
    databases: PostgresDatabases | SqliteDatabases = request.getfixturevalue(fixture)
    return databases


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def database_url(request: pytest.FixtureRequest, backend: str) -> Iterator[str]:
    with databases_for(request, backend).fresh() as url:
        yield url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def api(app: FastAPI) -> Iterator[Api]:
    with TestClient(app) as client:
        yield Api(client, app)


@pytest.fixture
def sqlite_api(request: pytest.FixtureRequest) -> Iterator[tuple[Api, str]]:
    """An app on a fresh SQLite database, its client, and the database URL."""
    with databases_for(request, "sqlite").fresh() as url:
        app = create_app(make_settings(url))
        with TestClient(app) as client:
            yield Api(client, app), url
