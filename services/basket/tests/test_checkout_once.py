"""Checkout exactly once per basket version, and Idempotency-Key semantics
(draft-ietf-httpapi-idempotency-key-header), on both stores and across two replicas."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import pytest
from starlette.requests import Request

from basket.api import _fingerprint
from basket.config import Settings
from basket.schemas import CheckoutRequest
from basket.service import BasketService, checkout_id, pending_key
from basket.state import DaprSidecar, StoreBreaker
from devstack.procs import free_port
from devstack.pytest_plugin import StackFactory
from devstack.stack import DEMO_DAPR_API_TOKEN, DEMO_JWT_SECRET, Stack
from devstack.testkit import (
    SHIPPING,
    assert_problem,
    checkout_events,
    eventually,
    new_product,
    quantities,
    sidecar_state,
    stock_of,
)
from devstack.testkit import unique_user as buyer
from eshop_common.auth import mint_token
from eshop_common.sidecar import Sidecar

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


def checkout_fingerprint(shipping: dict) -> str:
    """What the API records for `POST /api/basket/checkout` with this body and no conditions."""
    request = Request({"type": "http", "method": "POST", "path": "/api/basket/checkout",
                       "headers": []})  # fmt: skip
    return _fingerprint(request, CheckoutRequest.model_validate({"shipping": shipping}))


def crash_after_the_checkout_save(stack: Stack, me: str, idempotency_key: str | None = None) -> str:
    """Leave the buyer's basket as a checkout that crashed right after its save leaves it:
    emptied, the order in its outbox, nothing published. Returns the order's request id."""
    with sidecar_state(stack) as state:
        read = state.get(f"/{me}", params={"consistency": "strong"})
        stored = read.json()
        request_id = checkout_id(me, stored["revision"])
        lines = [
            {"productId": i["productId"], "productName": i["productName"],
             "unitPrice": i["unitPrice"], "quantity": i["quantity"]}
            for i in stored["items"]
        ]  # fmt: skip
        event = {"requestId": request_id, "buyerId": me, "items": lines,
                 "total": sum(line["unitPrice"] * line["quantity"] for line in lines),
                 "shipping": SHIPPING}  # fmt: skip
        record = {"requestId": request_id, "idempotencyKey": idempotency_key,
                  "requestFingerprint": checkout_fingerprint(SHIPPING)}  # fmt: skip
        committed = {
            **stored, "items": [], "revision": str(uuid.uuid4()), "checkouts": [record],
            "outbox": [{"event": event, "committedAt": time.time() - 60}],
        }  # fmt: skip
        saved = state.post(
            "", json=[{"key": me, "value": committed, "etag": read.headers["etag"],
                       "options": {"concurrency": "first-write"}}],
        )  # fmt: skip
        assert saved.status_code == 204, saved.text
    return request_id


def outbox_of(stack: Stack, me: str) -> list[dict]:
    with sidecar_state(stack) as state:
        outbox: list[dict] = state.get(f"/{me}").json()["outbox"]
        return outbox


def test_an_order_a_crash_left_in_the_outbox_is_published_once_by_the_next_read(
    basket_stack: Stack, as_user
):
    """The crash between the two steps: the basket was emptied and the order saved in its
    outbox by one write, then the process died before publishing. Nothing is lost: the next
    request that reads the basket publishes the order, and a checkout retried without a key
    learns that it was placed."""
    item = new_product(basket_stack, stock=10, price=5.0)
    me = buyer()
    client = as_user(me)
    client.post("/api/basket/items", json={"productId": item["id"], "quantity": 2})
    request_id = crash_after_the_checkout_save(basket_stack, me)
    assert checkout_events(basket_stack, request_id) == []

    assert client.get("/api/basket").json()["items"] == []
    assert settle(basket_stack, item["id"], 8) == 8
    eventually(lambda: outbox_of(basket_stack, me) == [], what="the outbox emptied")
    again = assert_problem(client.post("/api/basket/checkout", json={"shipping": SHIPPING}), 409)
    assert again["requestId"] == request_id
    (event,) = checkout_events(basket_stack, request_id)
    assert event["data"]["items"][0]["quantity"] == 2


def test_a_checkout_retried_with_its_idempotency_key_after_a_crash_gets_its_202(
    basket_stack: Stack, as_user
):
    """draft-ietf-httpapi-idempotency-key-header §2: the retry of a request whose first attempt
    crashed after its save gets that attempt's response, even with a new item in the basket,
    which stays."""
    item = new_product(basket_stack, stock=10)
    me, key = buyer(), uuid.uuid4().hex
    client = as_user(me)
    client.post("/api/basket/items", json={"productId": item["id"], "quantity": 1})
    request_id = crash_after_the_checkout_save(basket_stack, me, idempotency_key=key)
    client.post("/api/basket/items", json={"productId": item["id"], "quantity": 3})

    retry = client.post(
        "/api/basket/checkout", json={"shipping": SHIPPING}, headers={"Idempotency-Key": key}
    )
    assert (retry.status_code, retry.json()) == (202, {"requestId": request_id})
    assert quantities(client.get("/api/basket").json()) == {item["id"]: 3}
    assert settle(basket_stack, item["id"], 9) == 9


async def race_checkouts_and_adds(urls: list[str], me: str, first: int, second: int) -> list[str]:
    """On two replicas at once: checkout, add `second`, checkout, add `first`. Returns the
    request ids of the accepted checkouts."""
    headers = {"Authorization": f"Bearer {mint_token(DEMO_JWT_SECRET, me)}"}
    one, two = (httpx.AsyncClient(base_url=u, headers=headers, timeout=30) for u in urls)
    checkout = {"shipping": SHIPPING}
    try:
        responses = await asyncio.gather(
            one.post("/api/basket/checkout", json=checkout),
            two.post("/api/basket/items", json={"productId": second}),
            two.post("/api/basket/checkout", json=checkout),
            one.post("/api/basket/items", json={"productId": first}),
        )
    finally:
        await one.aclose()
        await two.aclose()
    assert [r.status_code for r in responses[1::2]] == [200, 200], [r.text for r in responses]
    assert all(r.status_code in (202, 409) for r in responses[::2]), [r.text for r in responses]
    return [r.json()["requestId"] for r in responses[::2] if r.status_code == 202]


def test_checkouts_racing_adds_on_two_replicas_order_every_added_item_exactly_once(
    basket_stack: Stack, as_user, replica_url
):
    """Each add is in exactly one order, whatever the interleaving: the save that checks a
    version out fails when an add (or another checkout) saved first, and starts again."""
    rounds = 8
    first, second = (new_product(basket_stack, stock=100) for _ in range(2))
    me = buyer()
    client = as_user(me)
    client.post("/api/basket/items", json={"productId": first["id"]})
    urls = [basket_stack.url("basket-api"), replica_url]
    accepted = []
    for _ in range(rounds):
        accepted += asyncio.run(race_checkouts_and_adds(urls, me, first["id"], second["id"]))
    last = client.post("/api/basket/checkout", json={"shipping": SHIPPING})
    if last.status_code == 202:
        accepted.append(last.json()["requestId"])

    ordered: dict[int, int] = {}
    for request_id in accepted:
        versions = {
            json.dumps(e["data"], sort_keys=True) for e in checkout_events(basket_stack, request_id)
        }
        assert len(versions) == 1, versions
        for line in json.loads(versions.pop())["items"]:
            ordered[line["productId"]] = ordered.get(line["productId"], 0) + line["quantity"]
    assert ordered == {first["id"]: rounds + 1, second["id"]: rounds}
    assert settle(basket_stack, first["id"], 100 - rounds - 1) == 100 - rounds - 1
    assert stock_of(basket_stack, second["id"]) == 100 - rounds


def test_of_checkouts_to_different_addresses_the_accepted_one_is_the_one_published(
    basket_stack: Stack, as_user, replica_url
):
    item = new_product(basket_stack, stock=10)
    me = buyer()
    as_user(me).post("/api/basket/items", json={"productId": item["id"]})
    headers = {"Authorization": f"Bearer {mint_token(DEMO_JWT_SECRET, me)}"}
    addresses = [{**SHIPPING, "city": f"City {i}"} for i in range(6)]

    async def checkouts() -> list[httpx.Response]:
        clients = [
            httpx.AsyncClient(base_url=u, headers=headers, timeout=30)
            for u in (basket_stack.url("basket-api"), replica_url)
        ]
        try:
            return await asyncio.gather(
                *(clients[i % 2].post("/api/basket/checkout", json={"shipping": address})
                  for i, address in enumerate(addresses))
            )  # fmt: skip
        finally:
            for c in clients:
                await c.aclose()

    responses = asyncio.run(checkouts())
    (winner,) = [(r, a) for r, a in zip(responses, addresses, strict=True) if r.status_code == 202]
    assert sorted(r.status_code for r in responses) == [202] + [409] * 5
    request_id = winner[0].json()["requestId"]
    assert {r.json()["requestId"] for r in responses} == {request_id}
    events = eventually(lambda: checkout_events(basket_stack, request_id), what="the order")
    assert {e["data"]["shipping"]["city"] for e in events} == {winner[1]["city"]}


def test_a_checkout_while_the_pubsub_is_down_is_accepted_and_published_once_it_is_back(
    stack_factory: StackFactory,
):
    """The order is committed by the save; the event bus being down delays it, nothing more.
    (On the PostgreSQL stack, Redis carries only the pub/sub, so the basket keeps working.)"""
    stack = stack_factory.get("postgresql")
    assert stack.redis is not None
    item = new_product(stack, stock=10)
    me = buyer()
    headers = {"Authorization": f"Bearer {mint_token(DEMO_JWT_SECRET, me)}"}
    with httpx.Client(base_url=stack.url("basket-api"), headers=headers, timeout=30) as client:
        client.post("/api/basket/items", json={"productId": item["id"], "quantity": 2})
        stack.redis.stop()
        try:
            accepted = client.post("/api/basket/checkout", json={"shipping": SHIPPING})
            assert accepted.status_code == 202, accepted.text
            request_id = accepted.json()["requestId"]
            assert client.get("/api/basket").json()["items"] == []
            assert [e["event"]["requestId"] for e in outbox_of(stack, me)] == [request_id]
        finally:
            stack.redis.start()
        assert settle(stack, item["id"], 8, timeout=90) == 8
        eventually(lambda: outbox_of(stack, me) == [], what="the outbox emptied")
        assert len(checkout_events(stack, request_id)) == 1


def test_the_catalog_remembers_event_ids_longer_than_an_outbox_entry_can_wait():
    """An order left in a basket's outbox is sent again when the basket is next read, at most
    the basket's TTL after its last save; the catalog must still know the id by then, or it
    would reserve the stock a second time."""
    from basket.config import Settings as BasketSettings
    from catalog.config import Settings as CatalogSettings

    assert CatalogSettings().event_retention_seconds > BasketSettings().basket_ttl_seconds


def test_a_checkout_key_reused_after_its_record_expired_is_still_a_422_for_another_request(
    basket_stack: Stack,
):
    """draft-ietf-httpapi-idempotency-key-header §2.7: the basket remembers which request each
    checkout's key came with for longer than the key's own record lives."""
    name = f"basket-short-keys-{basket_stack.state_store}"
    url = basket_stack.start_extra_app(
        name, "basket-api", free_port(), {"IDEMPOTENCY_KEY_SECONDS": "1"}
    )
    try:
        item = new_product(basket_stack, stock=10)
        me, key = buyer(), {"Idempotency-Key": uuid.uuid4().hex}
        headers = {"Authorization": f"Bearer {mint_token(DEMO_JWT_SECRET, me)}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            client.post("/api/basket/items", json={"productId": item["id"]})
            first = client.post("/api/basket/checkout", json={"shipping": SHIPPING}, headers=key)
            assert first.status_code == 202
            time.sleep(2.5)  # the key's record has expired
            client.post("/api/basket/items", json={"productId": item["id"], "quantity": 2})
            same = client.post("/api/basket/checkout", json={"shipping": SHIPPING}, headers=key)
            assert (same.status_code, same.json()) == (202, first.json())
            time.sleep(2.5)
            other = {"shipping": OTHER_SHIPPING}
            assert_problem(client.post("/api/basket/checkout", json=other, headers=key), 422)
            assert quantities(client.get("/api/basket").json()) == {item["id"]: 2}
    finally:
        basket_stack.stop_process(name)


def test_an_order_a_stopped_replica_could_not_publish_is_sent_by_another_replicas_sweep(
    stack_factory: StackFactory,
):
    """The replica that accepted the checkout stops (a rolling update) while the event bus is
    down. The registry it wrote before saving lists the buyer; another replica's sweep finds
    the order in the basket's outbox and publishes it, without the buyer coming back."""
    stack = stack_factory.get("postgresql")
    assert stack.redis is not None
    accepting, sweeping = "basket-stops-during-outage", "basket-sweeps-every-second"
    url = stack.start_extra_app(accepting, "basket-api", free_port(), {})
    stack.start_extra_app(sweeping, "basket-api", free_port(), {"OUTBOX_SWEEP_SECONDS": "1"})
    try:
        item = new_product(stack, stock=10)
        me = buyer()
        headers = {"Authorization": f"Bearer {mint_token(DEMO_JWT_SECRET, me)}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            client.post("/api/basket/items", json={"productId": item["id"], "quantity": 2})
            stack.redis.stop()
            try:
                accepted = client.post("/api/basket/checkout", json={"shipping": SHIPPING})
                assert accepted.status_code == 202, accepted.text
                stack.stop_process(accepting)
            finally:
                stack.redis.start()
        assert settle(stack, item["id"], 8, timeout=60) == 8
        eventually(lambda: outbox_of(stack, me) == [], what="the outbox emptied")
        assert len(checkout_events(stack, accepted.json()["requestId"])) == 1
    finally:
        stack.stop_process(sweeping)


def test_a_sweep_passes_over_unreadable_entries_and_still_sends_the_rest(basket_stack: Stack):
    """Stored data is checked on read in the sweep too: a listed basket that cannot be read, or
    a registry entry that cannot, is passed over, and the orders of the others are sent."""
    item = new_product(basket_stack, stock=10)
    me, broken = buyer(), buyer()
    headers = {"Authorization": f"Bearer {mint_token(DEMO_JWT_SECRET, me)}"}
    httpx.post(f"{basket_stack.url('basket-api')}/api/basket/items", headers=headers,
               json={"productId": item["id"], "quantity": 2})  # fmt: skip
    request_id = crash_after_the_checkout_save(basket_stack, me)
    long_ago = time.time() - 60
    entries = {broken: "hello"}
    for key, buyers in ((pending_key(me), [me, broken]), (pending_key(broken), [broken])):
        entries[key] = {"buyers": dict.fromkeys(buyers, long_ago)}
    taken = {pending_key(me), pending_key(broken)}
    other_shard = next(
        f"outbox-pending:{n}" for n in range(16) if f"outbox-pending:{n}" not in taken
    )
    entries[other_shard] = "garbage"
    with sidecar_state(basket_stack) as state:
        for key, value in entries.items():
            # Over what earlier checkouts saved there (first-write): name the ETag read.
            etag = state.get(f"/{key}", params={"consistency": "strong"}).headers.get("etag")
            saved = state.post("", json=[{"key": key, "value": value, "etag": etag,
                                          "options": {"concurrency": "first-write"}}])  # fmt: skip
            assert saved.status_code == 204, saved.text

    async def sweep() -> None:
        async with Sidecar(
            basket_stack.dapr_url("basket-api"), owner="basket",
            api_token=DEMO_DAPR_API_TOKEN, timeout_seconds=5,
        ) as client:  # fmt: skip
            sidecar = DaprSidecar(
                client, store="statestore", catalog_app_id="catalog-api", pubsub="pubsub",
                breaker=StoreBreaker(5, 5),
            )  # fmt: skip
            service = BasketService(sidecar, Settings())
            await service.sweep_outboxes()
            await asyncio.sleep(2)  # its background send
            await service.close()

    asyncio.run(sweep())
    assert settle(basket_stack, item["id"], 8) == 8
    assert len(checkout_events(basket_stack, request_id)) == 1
