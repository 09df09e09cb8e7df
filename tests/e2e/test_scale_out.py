"""Scale-out on one machine: two processes of basket-api and of catalog-api, each with its own
sidecar under the same app id, sharing Redis and PostgreSQL, as two replicas of a deployment do
(`uv run devstack up --replicas basket-api=2 --replicas catalog-api=2` starts the same).

Load is spread over the replicas; what each replica acknowledged must hold for the system."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from itertools import cycle
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from devstack.experiments import add_without_etags, quantity_in_basket
from devstack.pytest_plugin import DatabaseServer, new_database
from devstack.stack import DEMO_JWT_SECRET, Stack
from devstack.testkit import SHIPPING, eventually, new_product, patch_item, quantities, unique_user
from eshop_common.auth import mint_token

BASKETS = ("basket-api", "basket-api-2")
CATALOGS = ("catalog-api", "catalog-api-2")


@pytest.fixture(scope="module")
def scaled(postgres_server: DatabaseServer, daprd_path: Path) -> Iterator[Stack]:
    """Its own database and Redis: its sidecars share app ids, and so consumer groups, with the
    session's stack, and must not take that stack's events."""
    stack = Stack(
        state_dir=Path(tempfile.mkdtemp(prefix="eshop-scaled-")),
        daprd=daprd_path,
        free_ports=True,
        durable=False,
        database_url=new_database(postgres_server, "scaled"),
        replicas={"basket-api": 2, "catalog-api": 2},
    )
    try:
        stack.start()
        for basket in BASKETS:
            stack.wait_invocable(basket, "catalog-api")
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(stack.state_dir, ignore_errors=True)


def headers(user: str, *, admin: bool = False) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(DEMO_JWT_SECRET, user, admin=admin)}"}


def basket_of(stack: Stack, user: str, replica: str = "basket-api") -> dict[str, Any]:
    resp = httpx.get(f"{stack.url(replica)}/api/basket", headers=headers(user), timeout=10)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def add_items(stack: Stack, user: str, product_id: int, adds: int, clients: int) -> list[int]:
    """`adds` single-unit adds to one basket from `clients` concurrent clients, alternating
    between the two basket replicas; the status of each."""
    replicas = cycle(BASKETS)
    urls = [stack.url(next(replicas)) for _ in range(clients)]

    async def client(url: str, count: int) -> list[int]:
        async with httpx.AsyncClient(base_url=url, headers=headers(user), timeout=60) as api:
            return [
                (await api.post("/api/basket/items", json={"productId": product_id})).status_code
                for _ in range(count)
            ]

    per_client = [adds // clients + (i < adds % clients) for i in range(clients)]
    results = await asyncio.gather(*(client(u, n) for u, n in zip(urls, per_client, strict=True)))
    return [status for statuses in results for status in statuses]


def test_concurrent_adds_spread_over_two_replicas_are_all_kept(scaled: Stack) -> None:
    item, buyer = new_product(scaled, stock=100), unique_user("scaled")
    statuses = asyncio.run(
        add_items(scaled, buyer, item["id"], adds=96, clients=16)
    )  # a line holds at most 99
    accepted = sum(status in (200, 201) for status in statuses)
    assert sorted(set(statuses)) <= [200, 201], statuses
    for replica in BASKETS:
        assert quantities(basket_of(scaled, buyer, replica)) == {item["id"]: accepted}


def test_control_without_etags_adds_spread_over_the_two_sidecars_are_lost(scaled: Stack) -> None:
    # The same race saved last-write-wins through both replicas' sidecars: the guard above is
    # what keeps the adds, not the replicas' timing.
    item, buyer = new_product(scaled, stock=100), unique_user("scaled-control")

    async def both() -> list[int]:
        return await asyncio.gather(
            *(add_without_etags(scaled.dapr_url(r), buyer, item["id"], 10) for r in BASKETS)
        )

    accepted = sum(asyncio.run(both()))
    kept = quantity_in_basket(scaled.url("basket-api"), buyer, item["id"])
    assert accepted == 20
    assert kept < accepted


def test_price_changes_reach_every_basket_once_and_in_order_with_two_outbox_relays(
    scaled: Stack,
) -> None:
    item = new_product(scaled, price=10.0, stock=100)
    buyers = [unique_user("scaled-price") for _ in range(6)]
    for buyer, replica in zip(buyers, cycle(BASKETS), strict=False):
        resp = httpx.post(f"{scaled.url(replica)}/api/basket/items", headers=headers(buyer),
                          json={"productId": item["id"]})  # fmt: skip
        assert resp.status_code in (200, 201), resp.text
    prices = [11.0, 12.0, 13.0, 14.0, 15.0, 16.0]
    etag = f'"{item["version"]}"'
    for price, catalog in zip(prices, cycle(CATALOGS), strict=False):
        # Each change under the ETag the other replica answered the last one with.
        resp = patch_item(scaled.url(catalog), item["id"], {"price": price}, etag=etag)
        assert resp.status_code == 200, resp.text
        etag = resp.headers["etag"]

    for buyer, replica in zip(buyers, cycle(BASKETS), strict=False):

        def settled(buyer: str = buyer, replica: str = replica) -> bool:
            line = basket_of(scaled, buyer, replica)["items"][0]
            # oldUnitPrice is the price the buyer added the item at.
            return bool(line["unitPrice"] == 16.0 and line.get("oldUnitPrice") == 10.0)

        eventually(settled, timeout=30, what=f"the last price in {buyer}'s basket")
    # Both relays ran; each change left the outbox once, in the order it was made.
    assert scaled.redis_url is not None
    stream = redis.Redis.from_url(scaled.redis_url, decode_responses=True)
    versions = [
        event["data"]["priceVersion"]
        for _, fields in stream.xrange("product-price-changed")
        if (event := json.loads(fields["data"]))["data"]["productId"] == item["id"]
    ]
    assert versions == list(range(1, len(prices) + 1))


def test_a_checkout_retried_against_the_other_replica_is_reserved_once(scaled: Stack) -> None:
    item, buyer = new_product(scaled, stock=10), unique_user("scaled-checkout")
    resp = httpx.post(f"{scaled.url('basket-api')}/api/basket/items", headers=headers(buyer),
                      json={"productId": item["id"], "quantity": 3})  # fmt: skip
    assert resp.status_code in (200, 201), resp.text
    shipping = SHIPPING
    key = uuid.uuid4().hex
    replies = [
        httpx.post(f"{scaled.url(replica)}/api/basket/checkout", json={"shipping": shipping},
                   headers={**headers(buyer), "Idempotency-Key": key}, timeout=30)
        for replica in BASKETS
    ]  # fmt: skip
    assert [r.status_code for r in replies] == [202, 202], [r.text for r in replies]
    assert replies[0].json() == replies[1].json()

    def stock() -> int:
        url = f"{scaled.url('catalog-api-2')}/api/catalog/items/{item['id']}"
        return int(httpx.get(url).json()["availableStock"])

    eventually(lambda: stock() == 7, timeout=30, what="the reservation")
    time.sleep(2)  # a second reservation, if there were one, would land by now
    assert stock() == 7


def test_killing_one_replica_mid_load_loses_no_acknowledged_write(scaled: Stack) -> None:
    item = new_product(scaled, stock=100)
    buyers = [unique_user("scaled-kill") for _ in range(10)]
    acknowledged = dict.fromkeys(buyers, 0)
    attempted = dict.fromkeys(buyers, 0)
    survivor_failures = 0

    async def shopper(buyer: str, replica: str) -> None:
        nonlocal survivor_failures
        async with httpx.AsyncClient(headers=headers(buyer), timeout=10) as api:
            for _ in range(30):
                attempted[buyer] += 1
                try:
                    resp = await api.post(f"{scaled.url(replica)}/api/basket/items",
                                          json={"productId": item["id"]})  # fmt: skip
                except httpx.TransportError:
                    continue
                if resp.status_code in (200, 201):
                    acknowledged[buyer] += 1
                elif replica == "basket-api":
                    survivor_failures += 1

    async def load_then_kill() -> None:
        tasks = [
            asyncio.create_task(shopper(buyer, replica))
            for buyer, replica in zip(buyers, cycle(BASKETS), strict=False)
        ]
        await asyncio.sleep(0.5)
        scaled.procs["basket-api-2"].popen.send_signal(signal.SIGKILL)
        await asyncio.gather(*tasks)

    try:
        asyncio.run(load_then_kill())
        assert survivor_failures == 0
        for buyer in buyers:
            quantity = quantities(basket_of(scaled, buyer)).get(item["id"], 0)
            # An add in flight when the process died may or may not have been saved.
            assert acknowledged[buyer] <= quantity <= attempted[buyer], buyer
        assert sum(acknowledged.values()) > 0
    finally:
        scaled.restart_exited()
        scaled.wait_ready("basket-api-2")
