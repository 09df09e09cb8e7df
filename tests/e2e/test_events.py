"""Events between basket and catalog through real sidecars and Redis streams: checkout and stock,
price changes through the catalog's outbox, duplicates and poison messages."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import pytest
import redis

from devstack.stack import DEMO_APP_API_TOKEN, DEMO_DAPR_API_TOKEN, DEMO_JWT_SECRET, Stack
from devstack.testkit import (
    SHIPPING,
    assert_problem,
    eventually,
    new_product,
    patch_item,
    published_events,
    quantities,
    unique_user,
)
from eshop_common.auth import mint_token

pytestmark = pytest.mark.usefixtures("stack")


def client(stack: Stack, user: str, service: str = "basket-api", admin: bool = False):
    token = mint_token(DEMO_JWT_SECRET, user, admin=admin)
    return httpx.Client(
        base_url=stack.url(service), headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def change_price(stack: Stack, item: dict[str, Any], price: float) -> dict[str, Any]:
    resp = patch_item(stack.url("catalog-api"), item["id"], {"price": price})
    assert resp.status_code == 200, resp.text
    changed: dict[str, Any] = resp.json()
    return changed


def stock_of(stack: Stack, item_id: int) -> int:
    return httpx.get(f"{stack.url('catalog-api')}/api/catalog/items/{item_id}").json()[
        "availableStock"
    ]


def publish(stack: Stack, app_id: str, topic: str, data: Any, event_id: str) -> None:
    """Publish through an app's sidecar, as the apps themselves do."""
    resp = httpx.post(
        f"{stack.dapr_url(app_id)}/v1.0/publish/pubsub/{topic}",
        json=data,
        params={"metadata.cloudevent.id": event_id},
        headers={"dapr-api-token": DEMO_DAPR_API_TOKEN},
    )
    assert resp.status_code == 204, resp.text


# -- checkout ------------------------------------------------------------------------------


def test_checkout_publishes_the_priced_basket_empties_it_and_reserves_stock(stack: Stack):
    item = new_product(stack, price=12.5, stock=10)
    shopper = client(stack, unique_user())
    shopper.post("/api/basket/items", json={"productId": item["id"], "quantity": 3})

    resp = shopper.post("/api/basket/checkout", json={"shipping": SHIPPING})
    assert resp.status_code == 202, resp.text
    request_id = resp.json()["requestId"]

    assert shopper.get("/api/basket").json()["items"] == []
    eventually(lambda: stock_of(stack, item["id"]) == 7, what="stock reserved")
    (event,) = [
        e for e in published_events(stack, "user-checkout-accepted") if e["id"] == request_id
    ]
    assert event["type"] == "UserCheckoutAccepted"
    data = event["data"]
    assert data["items"] == [
        {"productId": item["id"], "productName": item["name"], "unitPrice": 12.5, "quantity": 3}
    ]
    assert data["total"] == 37.5
    assert data["shipping"] == SHIPPING
    assert "card" not in json.dumps(data).lower()


def test_checking_out_an_empty_basket_is_a_400(stack: Stack):
    resp = client(stack, unique_user()).post("/api/basket/checkout", json={"shipping": SHIPPING})
    assert_problem(resp, 400)


@pytest.mark.parametrize(
    ("shipping", "field"),
    [
        ({**SHIPPING, "city": ""}, "city"),
        ({k: v for k, v in SHIPPING.items() if k != "street"}, "street"),
        ({**SHIPPING, "postalCode": "x" * 50}, "postalCode"),
    ],
)
def test_checkout_with_bad_shipping_details_is_a_422_naming_the_field(stack, shipping, field):
    resp = client(stack, unique_user()).post("/api/basket/checkout", json={"shipping": shipping})
    assert_problem(resp, 422, field)


def test_a_retried_checkout_with_the_same_idempotency_key_is_accepted_once(stack: Stack):
    item = new_product(stack, stock=10)
    shopper = client(stack, unique_user())
    shopper.post("/api/basket/items", json={"productId": item["id"], "quantity": 2})
    key = {"Idempotency-Key": uuid.uuid4().hex}

    first = shopper.post("/api/basket/checkout", json={"shipping": SHIPPING}, headers=key)
    second = shopper.post("/api/basket/checkout", json={"shipping": SHIPPING}, headers=key)
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json() == second.json()

    request_id = first.json()["requestId"]
    eventually(lambda: stock_of(stack, item["id"]) == 8, what="stock reserved")
    time.sleep(1)  # time enough for a second event to be handled, were there one
    assert stock_of(stack, item["id"]) == 8
    published = [
        e for e in published_events(stack, "user-checkout-accepted") if e["id"] == request_id
    ]
    assert len(published) == 1


def test_a_bad_idempotency_key_is_a_400(stack: Stack):
    resp = client(stack, unique_user()).post(
        "/api/basket/checkout", json={"shipping": SHIPPING}, headers={"Idempotency-Key": "a b"}
    )
    assert_problem(resp, 400, "Idempotency-Key")


def test_not_enough_stock_refuses_the_whole_reservation_and_says_why(stack: Stack):
    scarce = new_product(stack, stock=1)
    plenty = new_product(stack, stock=10)
    shopper = client(stack, unique_user())
    shopper.post("/api/basket/items", json={"productId": scarce["id"], "quantity": 2})
    shopper.post("/api/basket/items", json={"productId": plenty["id"], "quantity": 1})
    request_id = shopper.post("/api/basket/checkout", json={"shipping": SHIPPING}).json()[
        "requestId"
    ]

    def rejection() -> dict[str, Any] | None:
        events = published_events(stack, "stock-reservation-rejected")
        return next((e for e in events if e["data"]["requestId"] == request_id), None)

    event = eventually(rejection, what="StockReservationRejected")
    assert event["type"] == "StockReservationRejected"
    assert event["data"]["shortages"] == [
        {"productId": scarce["id"], "requested": 2, "available": 1}
    ]
    # All or nothing: the line that had enough stock was not taken either.
    assert (stock_of(stack, scarce["id"]), stock_of(stack, plenty["id"])) == (1, 10)


# The adds start this long after the checkout, so that across a sweep some of them land between
# the checkout's read of the basket and its delete, whatever this machine's timings are.
DELAYS = [0.0, 0.001, 0.002, 0.003, 0.005, 0.008]


def checkout_while_adding(
    url: str, user: str, first: int, later: list[int], delay: float
) -> tuple[dict, str]:
    """Check out a basket holding `first` while other requests add `later` products."""
    headers = {"Authorization": f"Bearer {mint_token(DEMO_JWT_SECRET, user)}"}

    async def run() -> tuple[dict, str]:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
            (await http.post("/api/basket/items", json={"productId": first})).raise_for_status()

            async def add_later() -> list[httpx.Response]:
                await asyncio.sleep(delay)
                adds = [http.post("/api/basket/items", json={"productId": p}) for p in later]
                return await asyncio.gather(*adds)

            checkout, adds = await asyncio.gather(
                http.post("/api/basket/checkout", json={"shipping": SHIPPING}), add_later()
            )
            for r in [checkout, *adds]:
                assert r.status_code in (200, 202), r.text
            return (await http.get("/api/basket")).json(), checkout.json()["requestId"]

    return asyncio.run(run())


def items_lost(stack: Stack, url: str, products: list[int], delay: float) -> int:
    """How many added products ended up neither checked out nor still in the basket."""
    user = unique_user()
    basket, request_id = checkout_while_adding(url, user, products[0], products[1:], delay)

    def event() -> dict[str, Any] | None:
        events = published_events(stack, "user-checkout-accepted")
        return next((e for e in events if e["id"] == request_id), None)

    checked_out = {line["productId"] for line in eventually(event)["data"]["items"]}
    kept = set(quantities(basket))
    assert not checked_out & kept, "a product was both checked out and kept"
    return len(set(products) - checked_out - kept)


@pytest.fixture(scope="module")
def race_products(stack: Stack) -> list[int]:
    return [new_product(stack, stock=1000)["id"] for _ in range(8)]


def test_an_item_added_during_checkout_stays_in_the_basket(stack: Stack, race_products):
    for delay in DELAYS * 2:
        assert items_lost(stack, stack.url("basket-api"), race_products, delay) == 0


def unsafe_checkout_while_adding(
    stack: Stack, user: str, first: int, later: list[int], delay: float
) -> tuple[set[int], set[int]]:
    """The control, built here rather than in the service: a checkout that reads the basket,
    publishes it, then deletes it without the ETag it read (as most samples do), while other
    requests add `later` products. Returns (checked out, kept)."""
    headers = {"Authorization": f"Bearer {mint_token(DEMO_JWT_SECRET, user)}"}
    sidecar = {"dapr-api-token": DEMO_DAPR_API_TOKEN}

    async def run() -> tuple[set[int], set[int]]:
        async with (
            httpx.AsyncClient(base_url=stack.url("basket-api"), headers=headers) as http,
            httpx.AsyncClient(base_url=stack.dapr_url("basket-api"), headers=sidecar) as dapr,
        ):
            (await http.post("/api/basket/items", json={"productId": first})).raise_for_status()

            async def checkout() -> set[int]:
                basket = (await dapr.get(f"/v1.0/state/statestore/{user}")).json()
                await dapr.post("/v1.0/publish/pubsub/control-checkout", json=basket)
                (await dapr.delete(f"/v1.0/state/statestore/{user}")).raise_for_status()
                return {line["productId"] for line in basket["items"]}

            async def add_later() -> None:
                await asyncio.sleep(delay)
                adds = [http.post("/api/basket/items", json={"productId": p}) for p in later]
                for r in await asyncio.gather(*adds):
                    r.raise_for_status()

            bought, _ = await asyncio.gather(checkout(), add_later())
            kept = set(quantities((await http.get("/api/basket")).json()))
            return bought, kept

    return asyncio.run(run())


def test_the_control_deleting_without_the_etag_loses_items_added_during_checkout(
    stack: Stack, race_products
):
    lost = 0
    for delay in DELAYS * 4:
        first, later = race_products[0], race_products[1:]
        bought, kept = unsafe_checkout_while_adding(stack, unique_user(), first, later, delay)
        lost += len(set(race_products) - bought - kept)
        if lost:
            break
    assert lost > 0, f"the unsafe checkout never lost an item in {len(DELAYS) * 4} races"


# -- price changes -------------------------------------------------------------------------


def basket_line(shopper: httpx.Client, product_id: int) -> dict[str, Any]:
    return next(
        i for i in shopper.get("/api/basket").json()["items"] if i["productId"] == product_id
    )


def test_a_price_change_shows_as_new_and_old_price_in_every_basket_holding_it(stack: Stack):
    item = new_product(stack, price=20.0)
    shoppers = [client(stack, unique_user()) for _ in range(3)]
    for shopper in shoppers:
        shopper.post("/api/basket/items", json={"productId": item["id"]}).raise_for_status()

    change_price(stack, item, 24.0)

    for shopper in shoppers:
        line = eventually(
            lambda s=shopper: (line := basket_line(s, item["id"]))["unitPrice"] == 24.0 and line,
            what="the new price in the basket",
        )
        assert line["oldUnitPrice"] == 20.0


def test_the_price_change_goes_through_the_outbox_even_while_the_sidecar_is_down(stack: Stack):
    item = new_product(stack, price=30.0)
    shopper = client(stack, unique_user())
    shopper.post("/api/basket/items", json={"productId": item["id"]}).raise_for_status()

    stack.stop_process("catalog-api-dapr")
    try:
        change_price(stack, item, 33.0)  # commits: the event waits in the outbox
        time.sleep(1.5)
        assert basket_line(shopper, item["id"])["unitPrice"] == 30.0
    finally:
        stack.start_sidecar("catalog-api")
        stack.wait_ready("catalog-api")
        stack.wait_invocable("basket-api", "catalog-api")

    line = eventually(
        lambda: (line := basket_line(shopper, item["id"]))["unitPrice"] == 33.0 and line,
        timeout=30,
        what="the price after the sidecar came back",
    )
    assert line["oldUnitPrice"] == 30.0
    changes = [
        e for e in published_events(stack, "product-price-changed")
        if e["data"]["productId"] == item["id"]
    ]  # fmt: skip
    assert [e["data"]["priceVersion"] for e in changes] == [1]


def test_a_late_older_price_event_does_not_undo_a_newer_one(stack: Stack):
    item = new_product(stack, price=10.0)
    shopper = client(stack, unique_user())
    shopper.post("/api/basket/items", json={"productId": item["id"]}).raise_for_status()
    change_price(stack, item, 11.0)
    change_price(stack, {**item, "price": 11.0}, 12.0)
    eventually(lambda: basket_line(shopper, item["id"])["unitPrice"] == 12.0)

    stale = {"productId": item["id"], "price": 11.0, "oldPrice": 10.0, "priceVersion": 1}
    publish(stack, "catalog-api", "product-price-changed", stale, str(uuid.uuid4()))
    time.sleep(1.5)
    assert basket_line(shopper, item["id"])["unitPrice"] == 12.0


# -- duplicates and poison -----------------------------------------------------------------


def test_a_checkout_event_delivered_twice_reserves_stock_once(stack: Stack):
    item = new_product(stack, stock=10)
    event_id = str(uuid.uuid4())
    checkout = {
        "requestId": event_id,
        "buyerId": unique_user(),
        "items": [
            {"productId": item["id"], "productName": item["name"], "unitPrice": 20.0,
             "quantity": 4}
        ],
        "total": 80.0,
        "shipping": SHIPPING,
    }  # fmt: skip
    publish(stack, "basket-api", "user-checkout-accepted", checkout, event_id)
    publish(stack, "basket-api", "user-checkout-accepted", checkout, event_id)

    eventually(lambda: stock_of(stack, item["id"]) == 6, what="stock reserved")
    time.sleep(1.5)
    assert stock_of(stack, item["id"]) == 6


def test_a_price_event_delivered_twice_has_one_effect(stack: Stack):
    item = new_product(stack, price=40.0)
    shopper = client(stack, unique_user())
    shopper.post("/api/basket/items", json={"productId": item["id"]}).raise_for_status()
    event_id = str(uuid.uuid4())
    change = {"productId": item["id"], "price": 44.0, "oldPrice": 40.0, "priceVersion": 1}
    publish(stack, "catalog-api", "product-price-changed", change, event_id)
    publish(stack, "catalog-api", "product-price-changed", change, event_id)

    line = eventually(
        lambda: (line := basket_line(shopper, item["id"]))["unitPrice"] == 44.0 and line
    )
    assert line["oldUnitPrice"] == 40.0
    stored = redis.Redis.from_url(stack.redis_url, decode_responses=True).hgetall(
        f"basket-api||product-price:{item['id']}"
    )
    assert stored["version"] == "1", "the second delivery wrote nothing"


def test_a_malformed_event_is_dropped_to_the_dead_letter_topic(stack: Stack):
    event_id = str(uuid.uuid4())
    publish(stack, "basket-api", "user-checkout-accepted", {"requestId": "no items"}, event_id)

    def dead() -> bool:
        return any(e.get("id") == event_id for e in published_events(stack, "deadletter"))

    eventually(dead, what="the poison message in the dead-letter topic")


def test_only_the_sidecar_may_post_events(stack: Stack):
    body = {"id": str(uuid.uuid4()), "data": {}}
    for app_id, path in (
        ("catalog-api", "/events/user-checkout-accepted"),
        ("basket-api", "/events/product-price-changed"),
    ):
        url = stack.url(app_id) + path
        assert_problem(httpx.post(url, json=body), 401)
        wrong = httpx.post(url, json=body, headers={"dapr-api-token": "guess"})
        assert_problem(wrong, 401)
        right = httpx.post(url, json=body, headers={"dapr-api-token": DEMO_APP_API_TOKEN})
        assert right.json() == {"status": "DROP"}


# -- the key design: no scanning ------------------------------------------------------------


def redis_calls(store: redis.Redis, command: str) -> int:
    stats = store.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def hash_reads_for_one_basket_read(store: redis.Redis, shopper: httpx.Client) -> int:
    before = redis_calls(store, "hgetall")
    shopper.get("/api/basket").raise_for_status()
    return redis_calls(store, "hgetall") - before


def test_a_basket_read_costs_the_same_however_many_baskets_hold_a_repriced_product(stack: Stack):
    store = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    item = new_product(stack, price=50.0)
    shopper = client(stack, unique_user())
    shopper.post("/api/basket/items", json={"productId": item["id"]}).raise_for_status()
    scans_before = redis_calls(store, "scan") + redis_calls(store, "keys")

    change_price(stack, item, 51.0)
    eventually(lambda: basket_line(shopper, item["id"])["unitPrice"] == 51.0)
    with_one_basket = hash_reads_for_one_basket_read(store, shopper)

    async def fill(n: int) -> None:
        async with httpx.AsyncClient(base_url=stack.url("basket-api"), timeout=30) as http:

            async def add_for_new_buyer() -> None:
                token = mint_token(DEMO_JWT_SECRET, unique_user())
                await http.post(
                    "/api/basket/items",
                    json={"productId": item["id"]},
                    headers={"Authorization": f"Bearer {token}"},
                )

            for _ in range(n // 20):
                await asyncio.gather(*(add_for_new_buyer() for _ in range(20)))

    asyncio.run(fill(200))
    change_price(stack, {**item, "price": 51.0}, 52.0)
    eventually(lambda: basket_line(shopper, item["id"])["unitPrice"] == 52.0)
    with_many_baskets = hash_reads_for_one_basket_read(store, shopper)

    # The basket entry and one price entry per line: 2, with 1 basket or 201.
    assert with_one_basket == with_many_baskets == 2
    assert redis_calls(store, "scan") + redis_calls(store, "keys") == scans_before
