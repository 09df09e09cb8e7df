"""Transient errors: the store goes away, the basket answers 503 quickly, then recovers alone."""

from __future__ import annotations

import time

import httpx
import pytest

from devstack.redis import RedisServer
from devstack.stack import DEMO_JWT_SECRET, Stack
from devstack.testkit import assert_problem, unique_user
from eshop_common.auth import mint_token


def test_redis_down_is_a_bounded_503_and_the_basket_comes_back_with_redis(
    stack: Stack, redis_server: RedisServer | None
):
    if redis_server is None:
        pytest.skip("REDIS_URL names a server this test must not stop")
    me = unique_user()
    headers = {"Authorization": f"Bearer {mint_token(DEMO_JWT_SECRET, me)}"}
    client = httpx.Client(base_url=stack.url("basket-api"), headers=headers, timeout=30)
    product = httpx.get(f"{stack.url('catalog-api')}/api/catalog/items").json()["items"][0]
    client.post("/api/basket/items", json={"productId": product["id"], "quantity": 3})
    before = client.get("/api/basket").json()

    redis_server.stop()
    try:
        for _ in range(3):
            started = time.monotonic()
            assert_problem(client.get("/api/basket"), 503)
            assert time.monotonic() - started < 5, "the sidecar's timeout and retries bound it"
        body = client.post("/api/basket/items", json={"productId": product["id"]})
        assert_problem(body, 503)
        # Readiness is about the sidecar, which is fine: taking every replica out of the load
        # balancer because the shared store is down would only turn 503s into refusals.
        assert httpx.get(f"{stack.url('basket-api')}/readyz").status_code == 200
    finally:
        redis_server.start()

    # The circuit breaker may be open for its timeout (5s); after that the basket is back.
    deadline = time.monotonic() + 30
    while (resp := client.get("/api/basket")).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert resp.json() == before
    client.close()
