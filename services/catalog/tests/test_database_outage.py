"""When PostgreSQL goes away the catalog answers 503 quickly, and heals when PostgreSQL returns."""

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from catalog.config import Settings
from catalog.db_cli import load_seed, migrate
from catalog.main import create_catalog_app
from devstack.postgres import PostgresServer
from devstack.pytest_plugin import throwaway_postgres

BOUND_SECONDS = 5.0


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    with throwaway_postgres("catalog-outage-pg-") as server:
        yield server


def timed_get(client: TestClient, url: str):
    started = time.monotonic()
    response = client.get(url)
    return response, time.monotonic() - started


def test_database_outage_is_a_quick_503_and_the_service_recovers_by_itself(
    own_postgres, assert_problem
):
    url = own_postgres.create_database("catalog")
    migrate(url)
    load_seed(url)
    settings = Settings(
        database_url=url, db_connect_timeout=2, db_pool_timeout=1, outbox_relay_enabled=False
    )
    with TestClient(create_catalog_app(settings)) as client:
        assert client.get("/api/catalog/items").status_code == 200
        assert client.get("/readyz").status_code == 200

        own_postgres.stop()
        for path in [
            "/api/catalog/items",
            "/api/catalog/items/1",
            "/api/catalog/brands",
            "/readyz",
        ]:
            response, elapsed = timed_get(client, path)
            body = assert_problem(response, 503)
            assert "database" in body["detail"]
            assert body["type"] == "/problems/database-unavailable"
            assert response.headers["retry-after"]
            assert elapsed < BOUND_SECONDS, f"{path} took {elapsed:.1f}s"
        assert client.get("/healthz").status_code == 200, "the process itself is still alive"

        own_postgres.start()
        deadline = time.monotonic() + 30
        while (response := client.get("/api/catalog/items/1")).status_code != 200:
            assert time.monotonic() < deadline, response.text
            time.sleep(0.2)
        assert response.json()["id"] == 1
        assert client.get("/readyz").status_code == 200


def test_a_write_during_an_outage_is_a_503_and_leaves_nothing_behind(
    own_postgres, assert_problem, admin_headers, new_name
):
    url = own_postgres.create_database("catalog")
    migrate(url)
    load_seed(url)
    settings = Settings(
        database_url=url, db_connect_timeout=2, db_pool_timeout=1, outbox_relay_enabled=False
    )
    name = new_name()
    body = {"name": name, "price": 5, "catalogBrandId": 1, "catalogTypeId": 1}
    with TestClient(create_catalog_app(settings)) as client:
        own_postgres.stop()
        response = client.post("/api/catalog/items", json=body, headers=admin_headers)
        assert_problem(response, 503)
        own_postgres.start()
        deadline = time.monotonic() + 30
        while (page := client.get("/api/catalog/items", params={"q": name})).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert page.json()["count"] == 0


def test_every_connection_busy_is_overload_not_an_outage(own_postgres, assert_problem):
    """The database answers; the service has more requests than pooled connections. The caller
    is told to come back in a moment (503 /problems/overloaded, RFC 9110 §15.6.4 with
    Retry-After), not that the database is down, and `/readyz` stays 200."""
    url = own_postgres.create_database("catalog")
    migrate(url)
    settings = Settings(
        database_url=url, db_pool_size=1, db_max_overflow=0, db_pool_timeout=0.3,
        outbox_relay_enabled=False,
    )  # fmt: skip
    with TestClient(create_catalog_app(settings)) as client:
        assert client.get("/api/catalog/brands").status_code == 200
        engine = client.app_state["engine"]  # what the lifespan yielded
        revisions = client.app_state["read_cache"].revision_engine
        # A slow request holds the only connection: a read the cache cannot answer (a search
        # not made before) needs one, and one for the revision check (its own pool) too.
        for held in (engine, revisions):
            with held.connect():
                response, elapsed = timed_get(client, f"/api/catalog/items?q={held.url.port}x")
                body = assert_problem(response, 503)
                assert body["type"] == "/problems/overloaded"
                assert response.headers["retry-after"] == "1"
                assert elapsed < BOUND_SECONDS
        assert client.get("/api/catalog/brands").status_code == 200
