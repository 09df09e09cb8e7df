"""Fixtures for the catalog's tests: a migrated and seeded private database, the app with its
lifespan running, tokens, and a small API client whose helpers assert the expected status."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine

from catalog.config import Settings
from catalog.db_cli import load_seed, migrate
from catalog.main import create_catalog_app
from devstack.pytest_plugin import new_database
from eshop_common.auth import mint_token
from eshop_common.settings import DEMO_JWT_SECRET


def unique_name(prefix: str = "Test item") -> str:
    return f"{prefix} {uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def catalog_db_url(postgres_server) -> str:
    url = new_database(postgres_server, "catalog")
    migrate(url)
    load_seed(url)
    return url


@pytest.fixture(scope="session")
def settings(catalog_db_url: str) -> Settings:
    # No sidecar in these tests: the outbox relay is exercised by tests/e2e/test_events.py.
    return Settings(database_url=catalog_db_url, outbox_relay_enabled=False)


@pytest.fixture(scope="session")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_catalog_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def app_engine(client: TestClient) -> Engine:
    """The engine the running app made in its lifespan."""
    engine: Engine = client.app_state["engine"]
    return engine


@pytest.fixture(scope="session")
def db(catalog_db_url: str) -> Iterator[Engine]:
    """A separate engine for looking at (or going around) what the API did."""
    engine = create_engine(catalog_db_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(DEMO_JWT_SECRET, 'ada', admin=True)}"}


@pytest.fixture(scope="session")
def user_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(DEMO_JWT_SECRET, 'bob')}"}


class CatalogApi:
    def __init__(self, client: TestClient, admin_headers: dict[str, str]) -> None:
        self.client = client
        self.admin_headers = admin_headers

    def new_item(self, **overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": unique_name(),
            "description": "Made by a test.",
            "price": 12.5,
            "pictureFileName": "ridgeline-dome-2-tent.svg",
            "catalogBrandId": 1,
            "catalogTypeId": 1,
            "availableStock": 7,
            "restockThreshold": 2,
            "maxStockThreshold": 50,
        }
        body.update(overrides)
        return body

    def create_item(self, **overrides: Any) -> dict[str, Any]:
        response = self.client.post(
            "/api/catalog/items", json=self.new_item(**overrides), headers=self.admin_headers
        )
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def at_version(self, item: dict[str, Any]) -> dict[str, str]:
        """Admin headers for a change to `item` as it was read: If-Match with its ETag."""
        return {**self.admin_headers, "If-Match": f'"{item["version"]}"'}

    def get_item(self, item_id: int) -> dict[str, Any]:
        response = self.client.get(f"/api/catalog/items/{item_id}")
        assert response.status_code == 200, response.text
        item: dict[str, Any] = response.json()
        return item

    def list_items(self, **params: Any) -> dict[str, Any]:
        response = self.client.get("/api/catalog/items", params=params)
        assert response.status_code == 200, response.text
        page: dict[str, Any] = response.json()
        return page


@pytest.fixture(scope="session")
def api(client: TestClient, admin_headers: dict[str, str]) -> CatalogApi:
    return CatalogApi(client, admin_headers)


def _assert_problem(response, status: int, field: str | None = None) -> dict[str, Any]:
    """The response is an RFC 9457 problem with `status`, naming `field` when one is given."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    if field is not None:
        fields = [error["field"] for error in body.get("errors", [])]
        assert any(f == field or f.startswith(f"{field}[") for f in fields), body
    return body


@pytest.fixture(scope="session")
def assert_problem():
    return _assert_problem


@pytest.fixture(scope="session")
def new_name():
    return unique_name
