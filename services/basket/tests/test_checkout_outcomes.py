"""What became of a checkout, and products the catalog deleted, on both stores: the catalog
answers each checkout with StockReserved or StockReservationRejected, and announces deleted
products with ProductDeleted; the basket follows all three."""

from __future__ import annotations

import time
import uuid

import httpx

from devstack.stack import DEMO_DAPR_API_TOKEN, DEMO_JWT_SECRET, Stack
from devstack.testkit import (
    SHIPPING,
    assert_problem,
    eventually,
    new_product,
    quantities,
    sidecar_state,
    stock_of,
)
from devstack.testkit import unique_user as buyer
from eshop_common.auth import mint_token


def checkout(client: httpx.Client) -> str:
    resp = client.post("/api/basket/checkout", json={"shipping": SHIPPING})
    assert resp.status_code == 202, resp.text
    request_id: str = resp.json()["requestId"]
    return request_id


def outcome(client: httpx.Client, request_id: str, status: str) -> dict:
    def settled() -> dict | None:
        body: dict = client.get(f"/api/basket/checkouts/{request_id}").json()
        return body if body["status"] == status else None

    found: dict = eventually(settled, what=f"checkout {status}")
    return found


def publish(stack: Stack, topic: str, data: dict, event_id: str | None = None) -> None:
    """An event as the catalog's relay would publish it (a replayed copy, say)."""
    resp = httpx.post(
        f"{stack.dapr_url('catalog-api')}/v1.0/publish/pubsub/{topic}",
        json=data, params={"metadata.cloudevent.id": event_id or str(uuid.uuid4())},
        headers={"dapr-api-token": DEMO_DAPR_API_TOKEN},
    )  # fmt: skip
    assert resp.status_code == 204, resp.text


def remember_a_checkout(stack: Stack, me: str) -> str:
    """Make the buyer's (existing) basket remember a checkout the catalog has not answered."""
    request_id = str(uuid.uuid4())
    with sidecar_state(stack) as state:
        read = state.get(f"/{me}", params={"consistency": "strong"})
        remembered = {**read.json(), "checkouts": [{"requestId": request_id}]}
        saved = state.post("", json=[{"key": me, "value": remembered, "etag": read.headers["etag"],
                                      "options": {"concurrency": "first-write"}}])  # fmt: skip
        assert saved.status_code == 204, saved.text
    return request_id


def delete_product(stack: Stack, product_id: int) -> None:
    token = mint_token(DEMO_JWT_SECRET, "admin", admin=True)
    resp = httpx.delete(
        f"{stack.url('catalog-api')}/api/catalog/items/{product_id}",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status_code == 204, resp.text


def test_a_checkout_with_stock_reads_accepted_then_reserved(basket_stack: Stack, as_user):
    item = new_product(basket_stack, stock=5)
    client = as_user(buyer())
    client.post("/api/basket/items", json={"productId": item["id"], "quantity": 2})
    request_id = checkout(client)
    assert client.get(f"/api/basket/checkouts/{request_id}").json()["status"] in (
        "accepted", "reserved",
    )  # fmt: skip
    assert outcome(client, request_id, "reserved") == {
        "requestId": request_id, "status": "reserved",
    }  # fmt: skip
    assert stock_of(basket_stack, item["id"]) == 3


def test_a_rejected_checkout_gives_its_lines_back_once_and_says_why(basket_stack: Stack, as_user):
    short, plenty = new_product(basket_stack, stock=1), new_product(basket_stack, stock=9)
    me = buyer()
    client = as_user(me)
    client.post("/api/basket/items", json={"productId": short["id"], "quantity": 3})
    client.post("/api/basket/items", json={"productId": plenty["id"], "quantity": 1})
    request_id = checkout(client)

    rejected = outcome(client, request_id, "rejected")
    assert rejected["shortages"] == [{"productId": short["id"], "requested": 3, "available": 1}]
    assert sorted(rejected["returned"]) == sorted([short["id"], plenty["id"]])
    assert quantities(client.get("/api/basket").json()) == {short["id"]: 3, plenty["id"]: 1}
    assert stock_of(basket_stack, short["id"]) == 1  # all lines or none

    # A replayed rejection (another copy, another CloudEvent id) gives nothing back twice.
    lines = [{"productId": short["id"], "productName": "x", "unitPrice": 1, "quantity": 3}]
    publish(basket_stack, "stock-reservation-rejected", {
        "requestId": request_id, "buyerId": me, "reason": "not enough stock",
        "shortages": rejected["shortages"], "items": lines,
    })  # fmt: skip
    marker = new_product(basket_stack)
    client.post("/api/basket/items", json={"productId": marker["id"]})
    eventually(lambda: marker["id"] in quantities(client.get("/api/basket").json()))
    assert quantities(client.get("/api/basket").json())[short["id"]] == 3


def test_checkout_status_is_the_callers_own_and_unknown_ids_are_404(
    basket_stack: Stack, as_user, products
):
    alice, bob = as_user(buyer()), as_user(buyer())
    alice.post("/api/basket/items", json={"productId": products[0]["id"]})
    request_id = checkout(alice)
    assert alice.get(f"/api/basket/checkouts/{request_id}").status_code == 200
    assert_problem(bob.get(f"/api/basket/checkouts/{request_id}"), 404)
    assert_problem(alice.get(f"/api/basket/checkouts/{uuid.uuid4()}"), 404)


def test_a_deleted_product_is_flagged_cannot_grow_and_blocks_checkout_until_removed(
    basket_stack: Stack, as_user
):
    doomed, kept = new_product(basket_stack), new_product(basket_stack, stock=5)
    client = as_user(buyer())
    client.post("/api/basket/items", json={"productId": doomed["id"], "quantity": 2})
    client.post("/api/basket/items", json={"productId": kept["id"], "quantity": 1})
    delete_product(basket_stack, doomed["id"])

    def flagged() -> bool:
        lines = {i["productId"]: i for i in client.get("/api/basket").json()["items"]}
        return (
            lines[doomed["id"]].get("unavailable") is True
            and "unavailable" not in lines[kept["id"]]
        )

    eventually(flagged, what="the deleted product flagged")
    grow = client.patch(f"/api/basket/items/{doomed['id']}", json={"quantity": 3})
    assert_problem(grow, 409)
    assert client.patch(f"/api/basket/items/{doomed['id']}", json={"quantity": 1}).is_success
    blocked = assert_problem(client.post("/api/basket/checkout", json={"shipping": SHIPPING}), 409)
    assert blocked["productIds"] == [doomed["id"]]
    assert_problem(client.post("/api/basket/items", json={"productId": doomed["id"]}), 400)

    # A late price change for it does not bring it back.
    publish(basket_stack, "product-price-changed", {
        "productId": doomed["id"], "price": 1, "oldPrice": 20, "priceVersion": 99,
    })  # fmt: skip
    assert client.delete(f"/api/basket/items/{doomed['id']}").status_code == 200
    request_id = checkout(client)
    assert outcome(client, request_id, "reserved")["status"] == "reserved"


def test_a_rejection_gives_back_only_what_the_catalog_still_sells(basket_stack: Stack, as_user):
    gone, live = new_product(basket_stack), new_product(basket_stack)
    me = buyer()
    client = as_user(me)
    client.post("/api/basket/items", json={"productId": live["id"]})
    request_id = remember_a_checkout(basket_stack, me)
    delete_product(basket_stack, gone["id"])

    lines = [
        {"productId": p["id"], "productName": p["name"], "unitPrice": p["price"], "quantity": q}
        for p, q in ((gone, 2), (live, 1))
    ]
    publish(basket_stack, "stock-reservation-rejected", {
        "requestId": request_id, "buyerId": me, "reason": "not enough stock",
        "shortages": [{"productId": gone["id"], "requested": 2, "available": None}],
        "items": lines,
    })  # fmt: skip
    assert outcome(client, request_id, "rejected")["returned"] == [live["id"]]
    assert quantities(client.get("/api/basket").json()) == {live["id"]: 2}

    # A rejection of a checkout the basket does not remember changes nothing.
    publish(basket_stack, "stock-reservation-rejected", {
        "requestId": str(uuid.uuid4()), "buyerId": me, "reason": "not enough stock",
        "shortages": [], "items": [{**lines[1], "quantity": 5}],
    })  # fmt: skip
    marker = new_product(basket_stack)
    client.post("/api/basket/items", json={"productId": marker["id"]})
    assert quantities(client.get("/api/basket").json())[live["id"]] == 2


def test_a_deleted_product_stays_unavailable_after_its_tombstone_expires(
    basket_stack: Stack, as_user
):
    """A read that meets the tombstone writes the flag onto the basket's line, so a basket
    kept alive by later writes does not forget it when the tombstone expires (here: removed)."""
    doomed, other = new_product(basket_stack), new_product(basket_stack)
    me = buyer()
    client = as_user(me)
    client.post("/api/basket/items", json={"productId": doomed["id"]})
    delete_product(basket_stack, doomed["id"])

    def flagged_in_the_store() -> bool:
        client.get("/api/basket")
        with sidecar_state(basket_stack) as state:
            stored = state.get(f"/{me}").json()
        return any(i.get("unavailable") for i in stored["items"])

    eventually(flagged_in_the_store, what="the flag written onto the stored line")
    with sidecar_state(basket_stack) as state:
        assert state.delete(f"/product-price:{doomed['id']}").status_code == 204
    client.post("/api/basket/items", json={"productId": other["id"]})
    lines = {i["productId"]: i for i in client.get("/api/basket").json()["items"]}
    assert lines[doomed["id"]]["unavailable"] is True
    assert_problem(client.post("/api/basket/checkout", json={"shipping": SHIPPING}), 409)


def test_a_rejection_whose_lines_no_basket_could_hold_is_dropped(basket_stack: Stack, as_user):
    """Lines of 150, or of -4, are no checkout this basket made: the event is malformed and
    goes to the dead-letter topic; the basket and the checkout's status stay as they were."""
    item = new_product(basket_stack, stock=10)
    me = buyer()
    client = as_user(me)
    client.post("/api/basket/items", json={"productId": item["id"], "quantity": 3})
    request_id = remember_a_checkout(basket_stack, me)
    for quantity in (150, -4):
        line = {"productId": item["id"], "productName": item["name"], "unitPrice": 1,
                "quantity": quantity}  # fmt: skip
        publish(basket_stack, "stock-reservation-rejected", {
            "requestId": request_id, "buyerId": me, "reason": "not enough stock",
            "shortages": [], "items": [line],
        })  # fmt: skip
    marker = new_product(basket_stack)
    client.post("/api/basket/items", json={"productId": marker["id"]})
    time.sleep(1)
    assert quantities(client.get("/api/basket").json()) == {item["id"]: 3, marker["id"]: 1}
    assert client.get(f"/api/basket/checkouts/{request_id}").json()["status"] == "accepted"
