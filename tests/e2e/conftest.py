"""Where the end-to-end tests run: the local stack by default, or a compose stack.

    make test                                   # starts the local stack from dapr.yaml
    E2E_CATALOG_URL=http://localhost:5101 E2E_BASKET_URL=http://localhost:5102 \\
        uv run pytest tests/e2e                 # against `docker compose up`
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from devstack.stack import DEMO_JWT_SECRET
from eshop_common.auth import mint_token


@dataclass
class Target:
    catalog_url: str
    basket_url: str
    restart_basket: Callable[[], None]
    jwt_secret: str
    web_url: str | None = None
    # The trace backend's query API and Prometheus (docs/11-observability.md).
    jaeger_url: str | None = None
    prometheus_url: str | None = None

    def client(self, user: str, *, admin: bool = False, service: str = "basket") -> httpx.Client:
        token = mint_token(self.jwt_secret, user, admin=admin)
        base = self.basket_url if service == "basket" else self.catalog_url
        return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _wait_ready(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} was not ready within {timeout}s")


def _compose_restarter(basket_url: str) -> Callable[[], None]:
    import docker  # the Docker SDK; only needed against a compose stack

    def restart() -> None:
        engine = docker.from_env()
        # Both join the network namespace of basket-api-pod, which neither restart replaces.
        for service in ("basket-api", "basket-api-dapr"):
            for container in engine.containers.list(
                filters={"label": f"com.docker.compose.service={service}"}
            ):
                container.restart(timeout=10)
        _wait_ready(basket_url)

    return restart


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    basket_url = os.environ.get("E2E_BASKET_URL")
    catalog_url = os.environ.get("E2E_CATALOG_URL")
    secret = os.environ.get("JWT_SECRET", DEMO_JWT_SECRET)
    if basket_url and catalog_url:
        web_url = os.environ.get("E2E_WEB_URL")
        yield Target(
            catalog_url, basket_url, _compose_restarter(basket_url), secret, web_url,
            os.environ.get("E2E_JAEGER_URL"), os.environ.get("E2E_PROMETHEUS_URL"),
        )  # fmt: skip
        return
    stack = request.getfixturevalue("stack")

    def restart() -> None:
        stack.stop_process("basket-api")
        stack.stop_process("basket-api-dapr")
        stack.start_app_with_sidecar("basket-api")

    yield Target(
        stack.url("catalog-api"), stack.url("basket-api"), restart, secret, stack.url("webshop"),
        stack.jaeger.url if stack.jaeger else None,
        stack.prometheus_server.url if stack.prometheus_server else None,
    )  # fmt: skip
