from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from devstack.procs import free_port
from devstack.pytest_plugin import StackFactory
from devstack.stack import DEMO_JWT_SECRET, STATE_STORES, Stack
from eshop_common.auth import mint_token


@pytest.fixture(scope="session", params=STATE_STORES)
def basket_stack(request: pytest.FixtureRequest, stack_factory: StackFactory) -> Stack:
    """Every basket test runs twice: on the Redis state store and on the PostgreSQL one."""
    return stack_factory.get(request.param)


@pytest.fixture
def basket_url(basket_stack: Stack) -> str:
    return basket_stack.url("basket-api")


@pytest.fixture
def as_user(basket_url: str) -> Callable[[str], httpx.Client]:
    clients: list[httpx.Client] = []

    def make(user_id: str, *, admin: bool = False) -> httpx.Client:
        token = mint_token(DEMO_JWT_SECRET, user_id, admin=admin)
        client = httpx.Client(
            base_url=basket_url, headers={"Authorization": f"Bearer {token}"}, timeout=20
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def catalog_items(stack: Stack, count: int) -> list[dict]:
    """The first `count` real catalog items (id, name, price), read from the running catalog."""
    resp = httpx.get(
        f"{stack.url('catalog-api')}/api/catalog/items",
        params={"pageIndex": 0, "pageSize": count},
    )
    resp.raise_for_status()
    items: list[dict] = resp.json()["items"]
    return items


@pytest.fixture(scope="session")
def products(basket_stack: Stack) -> list[dict]:
    """A few real catalog items."""
    return catalog_items(basket_stack, 10)


@pytest.fixture(scope="session")
def many_products(basket_stack: Stack) -> list[dict]:
    """Twenty catalog items, for baskets with many lines."""
    return catalog_items(basket_stack, 20)


@pytest.fixture(scope="session")
def replica_url(basket_stack: Stack) -> Iterator[str]:
    """A second basket-api process on the same stack and store: another replica."""
    name = f"basket-replica-{basket_stack.state_store}"
    url = basket_stack.start_extra_app(name, "basket-api", free_port(), {})
    yield url
    basket_stack.stop_process(name)
