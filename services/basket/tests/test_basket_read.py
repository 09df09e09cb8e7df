"""A basket read fetches the basket and the price entries of the lines its process last saw in
one bulk call, and only the lines it did not know about in a second (basket.service.get). The
guess may only change how many calls a read makes, never what it returns: every test here reads
something the guess does not cover, on both stores.

Dapr's bulk read (https://docs.dapr.io/reference/api/state_api/#get-bulk-state) returns every key
asked; daprd answers it with an empty body when one value is not JSON, which must not turn a read
into a 500."""

from __future__ import annotations

import uuid

import httpx
import redis

from devstack.stack import DEMO_JWT_SECRET, Stack
from devstack.testkit import new_product, store_entry
from devstack.testkit import unique_user as buyer
from eshop_common.auth import mint_token


def newer_price(stack: Stack, product_id: int, price: float) -> None:
    """A price entry as the catalog's price-change event leaves it, newer than any line's."""
    store_entry(stack, f"product-price:{product_id}", {
        "productId": product_id, "price": price, "priceVersion": 99,
        "eventId": str(uuid.uuid4()),
    })  # fmt: skip


def client_for(url: str, user: str) -> httpx.Client:
    token = mint_token(DEMO_JWT_SECRET, user)
    return httpx.Client(base_url=url, timeout=20, headers={"Authorization": f"Bearer {token}"})


def test_a_line_added_through_another_replica_shows_with_its_current_price(
    basket_stack: Stack, basket_url: str, replica_url: str
):
    me = buyer()
    first, second = new_product(basket_stack, price=5.0), new_product(basket_stack, price=6.0)
    with client_for(basket_url, me) as here, client_for(replica_url, me) as there:
        assert here.post("/api/basket/items", json={"productId": first["id"]}).status_code == 200
        assert here.get("/api/basket").status_code == 200  # this process now knows one line
        assert there.post("/api/basket/items", json={"productId": second["id"]}).status_code == 200
        newer_price(basket_stack, second["id"], 11.0)
        lines = {i["productId"]: i for i in here.get("/api/basket").json()["items"]}
    assert set(lines) == {first["id"], second["id"]}
    assert lines[second["id"]]["unitPrice"] == 11.0
    assert lines[second["id"]]["oldUnitPrice"] == 6.0


def test_a_price_change_of_a_known_line_shows_on_the_next_read(
    basket_stack: Stack, basket_url: str
):
    me, item = buyer(), new_product(basket_stack, price=5.0)
    with client_for(basket_url, me) as client:
        client.post("/api/basket/items", json={"productId": item["id"]})
        assert client.get("/api/basket").json()["items"][0]["unitPrice"] == 5.0
        newer_price(basket_stack, item["id"], 4.5)
        (line,) = client.get("/api/basket").json()["items"]
    assert (line["unitPrice"], line["oldUnitPrice"]) == (4.5, 5.0)


def test_a_line_removed_through_another_replica_is_gone_on_the_next_read(
    basket_stack: Stack, basket_url: str, replica_url: str
):
    me = buyer()
    first, second = new_product(basket_stack), new_product(basket_stack)
    with client_for(basket_url, me) as here, client_for(replica_url, me) as there:
        here.post("/api/basket/items", json={"productId": first["id"]})
        here.post("/api/basket/items", json={"productId": second["id"]})
        assert len(here.get("/api/basket").json()["items"]) == 2
        assert there.delete(f"/api/basket/items/{first['id']}").status_code == 200
        items = here.get("/api/basket").json()["items"]
    assert [i["productId"] for i in items] == [second["id"]]


def test_a_price_entry_that_is_not_json_reads_as_none_not_a_500(stack: Stack):
    """Written with redis-cli past the sidecar (the Redis stack only). daprd cannot encode that
    value into a bulk answer and sends an empty body; the basket then reads key by key."""
    assert stack.redis_url is not None
    item = new_product(stack, price=7.0)
    with client_for(stack.url("basket-api"), buyer()) as client:
        client.post("/api/basket/items", json={"productId": item["id"]})
        redis.Redis.from_url(stack.redis_url).hset(
            f"basket-api||product-price:{item['id']}", mapping={"data": "not json {", "version": 1}
        )
        read = client.get("/api/basket")  # the price entry was guessed into the basket's call
        assert read.status_code == 200, read.text
        assert read.json()["items"][0]["unitPrice"] == 7.0
