"""The chapter's claims, each proven against a real sidecar and store, with a control."""

from __future__ import annotations

import json
import time

import httpx
import psycopg
import redis

from devstack import experiments
from devstack.procs import free_port
from devstack.stack import DEMO_JWT_SECRET, Stack
from devstack.testkit import unique_user as buyer
from eshop_common.auth import mint_token

CLIENTS = 20


def read_basket(url: str, user: str) -> dict:
    headers = {"Authorization": f"Bearer {mint_token(DEMO_JWT_SECRET, user)}"}
    resp = httpx.get(f"{url}/api/basket", headers=headers)
    resp.raise_for_status()
    return resp.json()


def test_concurrent_adds_to_one_basket_lose_no_update(basket_stack: Stack, products):
    outcome = experiments.run(basket_stack.url("basket-api"), products[0]["id"], CLIENTS)
    assert outcome == experiments.Outcome(accepted=CLIENTS, kept=CLIENTS)


def test_the_control_without_etags_does_lose_updates(basket_stack: Stack, products):
    outcome = experiments.run_without_etags(
        basket_stack.url("basket-api"), basket_stack.dapr_url("basket-api"), products[0]["id"],
        CLIENTS,
    )  # fmt: skip
    assert outcome.accepted == CLIENTS  # every save was accepted...
    assert outcome.kept < CLIENTS  # ...yet some of the adds are gone


def test_one_buyer_can_never_read_or_change_another_buyers_basket(as_user, products):
    alice, bob = as_user(buyer()), as_user(buyer())
    a, b = products[0]["id"], products[1]["id"]
    alice.post("/api/basket/items", json={"productId": a, "quantity": 3})
    alice_basket = alice.get("/api/basket").json()

    assert bob.get("/api/basket").json()["items"] == []
    bob.post("/api/basket/items", json={"productId": b, "quantity": 1})
    bob.patch(f"/api/basket/items/{a}", json={"quantity": 9})
    bob.delete(f"/api/basket/items/{a}")
    bob.put("/api/basket", json={"items": [], "buyerId": alice_basket["buyerId"]})
    bob.delete("/api/basket")

    assert alice.get("/api/basket").json() == alice_basket


def stored_basket(stack: Stack, buyer_id: str) -> tuple[dict, str, bool]:
    """The basket as the store holds it, read straight from Redis or PostgreSQL: (value, etag,
    expires)."""
    key = f"basket-api||{buyer_id}"
    if stack.state_store == "redis":
        store = redis.Redis.from_url(stack.redis_url, decode_responses=True)
        assert store.type(key) == "hash"
        fields = store.hgetall(key)
        assert set(fields) == {"data", "version", "first-write"}
        return json.loads(fields["data"]), fields["version"], 0 < store.ttl(key) <= 30 * 86400
    url = stack.database_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select value, etag, expires_at from dapr_state where key = %s", (key,)
        ).fetchone()
    assert row is not None
    value, etag, expires_at = row
    # The v2 PostgreSQL store keeps the value as the raw bytes the sidecar was given.
    return json.loads(bytes(value)), str(etag), expires_at is not None


def test_the_store_keeps_the_basket_under_the_app_id_prefix_with_its_revision(
    basket_stack: Stack, as_user, products
):
    me = buyer()
    client = as_user(me)
    client.post("/api/basket/items", json={"productId": products[0]["id"], "quantity": 2})
    resp = client.get("/api/basket")

    value, _store_version, expires = stored_basket(basket_stack, me)
    # The stored lines also remember the catalog's price version they were priced at; the
    # basket its revision (the HTTP ETag) and the latest ones, its latest checkouts, its outbox.
    assert [line.pop("priceVersion") for line in value["items"]] == [0]
    revision = value.pop("revision")
    assert f'"{revision}"' == resp.headers["etag"]
    assert value.pop("revisions") == [revision]
    assert value.pop("checkouts") == []
    assert value.pop("outbox") == []
    assert value.pop("schemaVersion") == 2
    assert value == resp.json()
    assert expires, "every save sets ttlInSeconds"


def test_a_basket_expires_after_its_ttl(basket_stack: Stack, products):
    name = f"basket-short-ttl-{basket_stack.state_store}"
    url = basket_stack.start_extra_app(name, "basket-api", free_port(), {"BASKET_TTL_SECONDS": "2"})
    try:
        me = buyer()
        headers = {"Authorization": f"Bearer {mint_token(DEMO_JWT_SECRET, me)}"}
        httpx.post(
            f"{url}/api/basket/items", json={"productId": products[0]["id"]}, headers=headers
        ).raise_for_status()
        assert read_basket(url, me)["items"]
        deadline = time.monotonic() + 15
        while read_basket(url, me)["items"] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert read_basket(url, me)["items"] == []
    finally:
        basket_stack.stop_process(name)


def test_restarting_the_basket_service_keeps_the_basket(basket_stack: Stack, as_user, products):
    client = as_user(buyer())
    client.post("/api/basket/items", json={"productId": products[0]["id"], "quantity": 4})
    before = client.get("/api/basket").json()

    basket_stack.stop_process("basket-api")
    basket_stack.start_app("basket-api")
    basket_stack.wait_ready("basket-api")

    assert client.get("/api/basket").json() == before


def test_sidecar_down_is_a_quick_503_and_the_service_recovers(
    basket_stack: Stack, as_user, products
):
    client = as_user(buyer())
    client.post("/api/basket/items", json={"productId": products[0]["id"], "quantity": 1})
    before = client.get("/api/basket").json()

    basket_stack.stop_process("basket-api-dapr")
    try:
        started = time.monotonic()
        resp = client.get("/api/basket")
        assert resp.status_code == 503
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert "retry-after" in resp.headers
        assert time.monotonic() - started < 6
        assert resp.json()["type"] == "/problems/sidecar-unavailable"
        # An add asks the catalog through the same sidecar: the problem must name the sidecar,
        # not the catalog.
        add = client.post("/api/basket/items", json={"productId": products[0]["id"]})
        assert (add.status_code, add.json()["type"]) == (503, "/problems/sidecar-unavailable")
        assert httpx.get(f"{basket_stack.url('basket-api')}/readyz").status_code == 503
    finally:
        basket_stack.start_sidecar("basket-api")
        basket_stack.wait_ready("basket-api")

    assert client.get("/api/basket").json() == before
