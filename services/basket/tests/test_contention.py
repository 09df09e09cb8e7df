"""Contention without refusals, and conflicts that no client can turn against the others."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from basket.state import ETagMismatch, StateStoreUnavailable, StoreBreaker
from devstack.stack import DEMO_JWT_SECRET, Stack
from devstack.testkit import quantities
from devstack.testkit import unique_user as buyer
from eshop_common.auth import mint_token

CLIENTS, ADDS = 20, 50


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(DEMO_JWT_SECRET, user)}"}


async def hammer_one_basket(urls: list[str], user: str, products: list[int]) -> list[int]:
    """CLIENTS clients, each adding its own product ADDS times, one add after the other, all on
    `user`'s basket; the clients are spread over `urls` (replicas)."""
    statuses: list[int] = []
    limits = httpx.Limits(max_connections=CLIENTS)

    async def client(i: int) -> None:
        async with httpx.AsyncClient(
            base_url=urls[i % len(urls)], headers=auth(user), timeout=60, limits=limits
        ) as http:
            for _ in range(ADDS):
                resp = await http.post("/api/basket/items", json={"productId": products[i]})
                statuses.append(resp.status_code)

    await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    return statuses


@pytest.mark.parametrize("replicas", [1, 2])
def test_twenty_clients_adding_fifty_times_to_one_basket_are_all_applied(
    basket_stack: Stack, replica_url, many_products, replicas
):
    user = buyer()
    pids = [p["id"] for p in many_products[:CLIENTS]]
    urls = [basket_stack.url("basket-api"), replica_url][:replicas]
    statuses = asyncio.run(hammer_one_basket(urls, user, pids))
    assert statuses.count(200) == CLIENTS * ADDS, sorted(set(statuses))
    basket = httpx.get(f"{urls[0]}/api/basket", headers=auth(user)).json()
    assert quantities(basket) == dict.fromkeys(pids, ADDS)


def test_one_buyers_stale_writes_never_fail_another_buyers_requests(
    basket_stack: Stack, as_user, products
):
    """The review's case: one buyer's stream of stale If-Match PUTs (200 in 2 s) opened Dapr's
    shared breaker and every other buyer got 503s. Now: 412 for that buyer, 2xx for the rest."""
    url, pid = basket_stack.url("basket-api"), products[0]["id"]
    noisy = buyer("noisy")
    as_user(noisy).post("/api/basket/items", json={"productId": pid})
    stale = as_user(noisy).get("/api/basket").headers["etag"]
    as_user(noisy).post("/api/basket/items", json={"productId": pid})
    others = [buyer() for _ in range(4)]

    async def run() -> tuple[list[int], list[int]]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:

            async def stale_put(i: int) -> int:
                await asyncio.sleep(i * 0.01)
                resp = await http.put(
                    "/api/basket", json={"items": []},
                    headers={**auth(noisy), "If-Match": stale},
                )  # fmt: skip
                return resp.status_code

            async def shopper(user: str) -> list[int]:
                codes = []
                deadline = time.monotonic() + 2.5
                while time.monotonic() < deadline:
                    add = await http.post(
                        "/api/basket/items", json={"productId": pid}, headers=auth(user)
                    )
                    read = await http.get("/api/basket", headers=auth(user))
                    codes += [add.status_code, read.status_code]
                return codes

            noise, *normal = await asyncio.gather(
                asyncio.gather(*(stale_put(i) for i in range(200))),
                *(shopper(u) for u in others),
            )
            return list(noise), [c for codes in normal for c in codes]

    noise, normal = asyncio.run(run())
    assert set(noise) == {412}
    assert normal
    assert all(200 <= c < 300 for c in normal), sorted(set(normal))
    # Dapr's own breaker is not on the state store any more; nothing may have opened it.
    assert "to open" not in basket_stack.log_text("basket-api-dapr")


async def conflicts_then_a_read(breaker_guard, conflicts: int) -> str:
    """`conflicts` ETag conflicts through a breaker, then one more call: what became of it."""
    for _ in range(conflicts):
        with pytest.raises(ETagMismatch):
            async with breaker_guard():
                raise ETagMismatch("basket")
    try:
        async with breaker_guard():
            return "called"
    except (OpenedState, StateStoreUnavailable):
        return "refused"


def test_the_service_breaker_ignores_conflicts_but_opens_on_outages():
    breaker = StoreBreaker(threshold=5, open_seconds=5)
    assert asyncio.run(conflicts_then_a_read(breaker.guard, 100)) == "called"

    async def outages() -> None:
        for _ in range(5):
            with pytest.raises(StateStoreUnavailable):
                async with breaker.guard():
                    raise StateStoreUnavailable("store down")

    asyncio.run(outages())
    assert asyncio.run(conflicts_then_a_read(breaker.guard, 0)) == "refused"


def test_the_control_a_breaker_that_counts_conflicts_refuses_everyone():
    """What Dapr's breaker does with a 409: count it. Five conflicts of one client, and the next
    call, anybody's, is refused."""
    plain = AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=5)

    def guard():
        class Guard:
            async def __aenter__(self):
                self.breaker = await plain.get_breaker("statestore")
                await self.breaker.__aenter__()

            async def __aexit__(self, *exc):
                await self.breaker.__aexit__(*exc)

        return Guard()

    assert asyncio.run(conflicts_then_a_read(guard, 5)) == "refused"
