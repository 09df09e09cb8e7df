"""Checkout exactly once per basket version, and Idempotency-Key semantics
(draft-ietf-httpapi-idempotency-key-header), on both stores and across two replicas."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from basket.service import checkout_id
from devstack.stack import DEMO_DAPR_API_TOKEN, DEMO_JWT_SECRET, Stack
from devstack.testkit import assert_problem, new_product, quantities, stock_of
from devstack.testkit import unique_user as buyer
from eshop_common.auth import mint_token

SHIPPING = {
    "fullName": "Ada Lovelace", "street": "12 Example Road", "city": "Springfield",
    "postalCode": "12345", "country": "Utopia",
}  # fmt: skip
OTHER_SHIPPING = {**SHIPPING, "city": "Shelbyville"}


def settle(stack: Stack, item_id: int, expected: int, timeout: float = 20) -> int:
    """Stock once the catalog has handled the events, and a moment longer for late duplicates."""
    deadline = time.monotonic() + timeout
    while stock_of(stack, item_id) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.5)
    return stock_of(stack, item_id)


async def checkouts_at_once(
    urls: list[str], user: str, n: int, key: str | None = None
) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {mint_token(DEMO_JWT_SECRET, user)}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    clients = [httpx.AsyncClient(base_url=u, headers=headers, timeout=30) for u in urls]
    try:
        return await asyncio.gather(
            *(
                clients[i % len(clients)].post("/api/basket/checkout", json={"shipping": SHIPPING})
                for i in range(n)
            )
        )
    finally:
        for client in clients:
            await client.aclose()


@pytest.mark.parametrize("replicas", [1, 2])
def test_parallel_checkouts_of_one_basket_order_it_once(
    basket_stack: Stack, as_user, replica_url, replicas
):
    item = new_product(basket_stack, stock=50)
    me = buyer()
    as_user(me).post("/api/basket/items", json={"productId": item["id"], "quantity": 3})
    urls = [basket_stack.url("basket-api"), replica_url][:replicas]

    responses = asyncio.run(checkouts_at_once(urls, me, 8))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [202] + [409] * 7, [r.text for r in responses]
    assert settle(basket_stack, item["id"], 47) == 47
    assert as_user(me).get("/api/basket").json()["items"] == []


@pytest.mark.parametrize("replicas", [1, 2])
def test_parallel_checkouts_sharing_an_idempotency_key_get_one_response(
    basket_stack: Stack, as_user, replica_url, replicas
):
    """draft §2: a repeated request with the same key gets the first one's response (or, while
    the first is still running on another replica, 409)."""
    item = new_product(basket_stack, stock=50)
    me = buyer()
    as_user(me).post("/api/basket/items", json={"productId": item["id"], "quantity": 2})
    urls = [basket_stack.url("basket-api"), replica_url][:replicas]

    responses = asyncio.run(checkouts_at_once(urls, me, 6, key=uuid.uuid4().hex))

    accepted = [r for r in responses if r.status_code == 202]
    assert accepted, [r.text for r in responses]
    assert {r.json()["requestId"] for r in accepted} == {accepted[0].json()["requestId"]}
    assert all(r.status_code in (202, 409) for r in responses)
    if replicas == 1:
        assert len(accepted) == 6
    assert settle(basket_stack, item["id"], 48) == 48


def test_a_checkout_of_an_emptied_basket_is_a_409_naming_the_order_and_an_empty_one_a_400(
    as_user, products
):
    client = as_user(buyer())
    assert_problem(client.post("/api/basket/checkout", json={"shipping": SHIPPING}), 400)
    client.post("/api/basket/items", json={"productId": products[0]["id"]})
    first = client.post("/api/basket/checkout", json={"shipping": SHIPPING})
    assert first.status_code == 202
    again = assert_problem(client.post("/api/basket/checkout", json={"shipping": SHIPPING}), 409)
    assert again["requestId"] == first.json()["requestId"]


def test_an_idempotency_key_reused_with_another_request_is_a_422_and_does_nothing(
    basket_stack: Stack, as_user
):
    """The review's case: key K checked out, items added, K again with another address."""
    item = new_product(basket_stack, stock=10)
    client = as_user(buyer())
    key = {"Idempotency-Key": f'"{uuid.uuid4()}"'}
    client.post("/api/basket/items", json={"productId": item["id"], "quantity": 1})
    first = client.post("/api/basket/checkout", json={"shipping": SHIPPING}, headers=key)
    assert first.status_code == 202
    client.post("/api/basket/items", json={"productId": item["id"], "quantity": 2})

    other = client.post("/api/basket/checkout", json={"shipping": OTHER_SHIPPING}, headers=key)
    assert_problem(other, 422, "Idempotency-Key")
    same = client.post("/api/basket/checkout", json={"shipping": SHIPPING}, headers=key)
    assert (same.status_code, same.json()) == (202, first.json())
    assert quantities(client.get("/api/basket").json()) == {item["id"]: 2}
    assert settle(basket_stack, item["id"], 9) == 9


def test_an_add_retried_with_its_idempotency_key_is_applied_once(as_user, products):
    client = as_user(buyer())
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = {"productId": products[0]["id"], "quantity": 2}
    first = client.post("/api/basket/items", json=body, headers=key)
    second = client.post("/api/basket/items", json=body, headers=key)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert first.headers["etag"] == second.headers["etag"]
    assert quantities(client.get("/api/basket").json()) == {products[0]["id"]: 2}
    assert_problem(client.post("/api/basket/items", json={**body, "quantity": 3}, headers=key), 422)


def test_idempotency_keys_belong_to_one_buyer(as_user, products):
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = {"productId": products[0]["id"], "quantity": 1}
    alice, bob = as_user(buyer()), as_user(buyer())
    assert alice.post("/api/basket/items", json=body, headers=key).status_code == 200
    assert (
        bob.post("/api/basket/items", json={**body, "quantity": 2}, headers=key).status_code == 200
    )
    assert quantities(bob.get("/api/basket").json()) == {products[0]["id"]: 2}


def test_a_refused_request_leaves_its_idempotency_key_free(as_user, products):
    client = as_user(buyer())
    key = {"Idempotency-Key": uuid.uuid4().hex}
    assert_problem(
        client.post("/api/basket/checkout", json={"shipping": SHIPPING}, headers=key), 400
    )
    client.post("/api/basket/items", json={"productId": products[0]["id"]})
    resp = client.post("/api/basket/checkout", json={"shipping": SHIPPING}, headers=key)
    assert resp.status_code == 202, resp.text


def test_a_checkout_that_published_then_crashed_is_finished_by_its_retry_and_ordered_once(
    basket_stack: Stack, as_user
):
    """The crash between the two steps: the event of this basket version is out, the basket was
    not emptied. The retry publishes the same id (the catalog ignores it) and empties the basket:
    the order is neither lost nor placed twice, and the basket not lost."""
    item = new_product(basket_stack, stock=10, price=5.0)
    me = buyer()
    client = as_user(me)
    client.post("/api/basket/items", json={"productId": item["id"], "quantity": 2})
    revision = client.get("/api/basket").headers["etag"].strip('"')
    event_id = checkout_id(me, revision)
    line = {"productId": item["id"], "productName": item["name"], "unitPrice": 5.0, "quantity": 2}
    crashed = {"requestId": event_id, "buyerId": me, "items": [line], "total": 10.0,
               "shipping": SHIPPING}  # fmt: skip
    published = httpx.post(
        f"{basket_stack.dapr_url('basket-api')}/v1.0/publish/pubsub/user-checkout-accepted",
        json=crashed, params={"metadata.cloudevent.id": event_id},
        headers={"dapr-api-token": DEMO_DAPR_API_TOKEN},
    )  # fmt: skip
    assert published.status_code == 204
    assert settle(basket_stack, item["id"], 8) == 8
    assert quantities(client.get("/api/basket").json()) == {item["id"]: 2}

    retry = client.post("/api/basket/checkout", json={"shipping": SHIPPING})
    assert (retry.status_code, retry.json()) == (202, {"requestId": event_id})
    assert client.get("/api/basket").json()["items"] == []
    assert settle(basket_stack, item["id"], 8) == 8
