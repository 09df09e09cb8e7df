"""No event dies unseen: an event that can never succeed goes to the dead-letter topic at once
(one delivery, no retries), the catalog records every dead letter with its reason, an admin
lists them and publishes one again with its CloudEvent id. Real sidecars, Redis streams and
PostgreSQL; the retries of events that may pass later are in test_event_retries.py."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest
import redis

from devstack.stack import DEMO_APP_API_TOKEN, DEMO_DAPR_API_TOKEN, DEMO_JWT_SECRET, Stack
from devstack.testkit import eventually, new_product, published_events, sidecar_state, stock_of
from eshop_common.auth import mint_token

pytestmark = pytest.mark.usefixtures("stack")

LETTERS = "/api/catalog/admin/dead-letters"


def publish(stack: Stack, app_id: str, topic: str, data: Any, event_id: str) -> float:
    """Publish through an app's sidecar, as the apps do; returns when (time.monotonic())."""
    resp = httpx.post(
        f"{stack.dapr_url(app_id)}/v1.0/publish/pubsub/{topic}",
        json=data,
        params={"metadata.cloudevent.id": event_id, "metadata.cloudevent.type": "Test"},
        headers={"dapr-api-token": DEMO_DAPR_API_TOKEN},
    )
    assert resp.status_code == 204, resp.text
    return time.monotonic()


def admin(stack: Stack) -> httpx.Client:
    token = mint_token(DEMO_JWT_SECRET, "operator", admin=True)
    return httpx.Client(
        base_url=stack.url("catalog-api"), headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def letter_of(stack: Stack, event_id: str) -> dict[str, Any] | None:
    """The dead letter of `event_id` once it has arrived on the dead-letter topic."""
    with admin(stack) as operator:
        page = operator.get(LETTERS, params={"eventId": event_id}).json()
    letters = [x for x in page["items"] if x["deliveries"] > 0]
    return letters[0] if letters else None


def drops_logged(stack: Stack, app_id: str, event_id: str) -> int:
    """How many times `app_id`'s handlers answered DROP for the event (one log line each)."""
    return stack.log_text(app_id).count(f"event {event_id} to the deadletter topic")


def test_a_poison_checkout_is_dead_lettered_at_once_after_one_delivery(stack: Stack):
    event_id = str(uuid.uuid4())
    sent = publish(stack, "basket-api", "user-checkout-accepted", {"requestId": "r"}, event_id)

    letter = eventually(lambda: letter_of(stack, event_id), timeout=10, what="the dead letter")
    print(
        f"\npoison checkout: a recorded dead letter {time.monotonic() - sent:.2f}s after publishing"
    )
    assert letter["topic"] == "user-checkout-accepted"
    assert letter["source"] == "basket-api"
    assert letter["payload"] == {"requestId": "r"}
    assert letter["reason"].startswith("malformed UserCheckoutAccepted: buyerId: Field required")
    time.sleep(2)  # a retry would have come by now
    assert drops_logged(stack, "catalog-api", event_id) == 1
    assert letter_of(stack, event_id)["deliveries"] == 1


@pytest.mark.parametrize(
    ("topic", "data"),
    [
        ("product-price-changed", {"productId": -1, "price": 1, "oldPrice": 2, "priceVersion": 1}),
        # A buyer id that cannot name a basket: asked of the state store, it looked like an
        # outage (and counted towards the basket's breaker).
        ("stock-reserved", {"requestId": "r", "buyerId": "a||b"}),
        ("stock-reservation-rejected", {"requestId": "r", "buyerId": "b", "reason": "x",
                                        "shortages": [], "items": [{"productId": 2**31,
                                        "productName": "p", "unitPrice": 1, "quantity": 1}]}),
    ],
)  # fmt: skip
def test_poison_for_the_basket_is_dead_lettered_at_once_after_one_delivery(stack, topic, data):
    event_id = str(uuid.uuid4())
    publish(stack, "catalog-api", topic, data, event_id)

    letter = eventually(lambda: letter_of(stack, event_id), timeout=10, what="the dead letter")
    assert (letter["topic"], letter["payload"]) == (topic, data)
    assert letter["reason"] is None, "the basket keeps no record; its log says why"
    time.sleep(2)
    assert drops_logged(stack, "basket-api", event_id) == 1
    assert letter_of(stack, event_id)["deliveries"] == 1


def test_an_event_for_a_basket_that_cannot_be_read_is_dropped(stack: Stack):
    buyer = f"unreadable-{uuid.uuid4().hex[:8]}"
    with sidecar_state(stack) as state:
        state.post("", json=[{"key": buyer, "value": {"not": "a basket"}}]).raise_for_status()
    event = {"id": str(uuid.uuid4()), "data": {"requestId": "r", "buyerId": buyer}}
    resp = httpx.post(
        f"{stack.url('basket-api')}/events/stock-reserved",
        json=event,
        headers={"dapr-api-token": DEMO_APP_API_TOKEN},
    )
    assert resp.json() == {"status": "DROP"}


def test_a_dead_letter_is_replayed_to_its_topic_with_its_id_and_comes_back_if_still_poison(
    stack: Stack,
):
    event_id = str(uuid.uuid4())
    publish(stack, "basket-api", "user-checkout-accepted", {"requestId": "r"}, event_id)
    letter = eventually(lambda: letter_of(stack, event_id), timeout=10, what="the dead letter")

    with admin(stack) as operator:
        resp = operator.post(f"{LETTERS}/{letter['id']}/replay")
    assert resp.status_code == 202, resp.text
    assert resp.json()["replays"] == 1
    assert resp.json()["replayedAt"] is not None

    copies = [e for e in published_events(stack, "user-checkout-accepted") if e["id"] == event_id]
    assert len(copies) == 2
    assert copies[1]["source"] == copies[0]["source"] == "basket-api"
    assert copies[1]["type"] == copies[0]["type"]
    assert copies[1]["data"] == copies[0]["data"]
    # Still malformed: dropped again, and counted as a second arrival of the same letter.
    eventually(lambda: letter_of(stack, event_id)["deliveries"] == 2, timeout=10)
    assert drops_logged(stack, "catalog-api", event_id) == 2


def dead_letter_as_the_sidecar_writes_it(stack: Stack, envelope: dict[str, Any] | str) -> None:
    """Put a message on the dead-letter topic as daprd does when a subscriber's retries run
    out: the original message's bytes, as they were on their own topic (XADD `data`)."""
    data = envelope if isinstance(envelope, str) else json.dumps(envelope)
    assert stack.redis_url is not None
    redis.Redis.from_url(stack.redis_url).xadd("deadletter", {"data": data})


def test_a_checkout_that_ran_out_of_retries_is_reserved_once_when_replayed(stack: Stack):
    item = new_product(stack, stock=10)
    event_id = str(uuid.uuid4())
    checkout = {
        "requestId": event_id,
        "buyerId": f"buyer-{uuid.uuid4().hex[:8]}",
        "items": [{"productId": item["id"], "productName": item["name"], "unitPrice": 20.0,
                   "quantity": 3}],
    }  # fmt: skip
    dead_letter_as_the_sidecar_writes_it(
        stack,
        {"id": event_id, "specversion": "1.0", "source": "basket-api",
         "type": "UserCheckoutAccepted", "datacontenttype": "application/json",
         "pubsubname": "pubsub", "topic": "user-checkout-accepted", "data": checkout},
    )  # fmt: skip
    letter = eventually(lambda: letter_of(stack, event_id), timeout=10, what="the dead letter")
    assert letter["reason"] is None
    assert stock_of(stack, item["id"]) == 10

    with admin(stack) as operator:
        for _ in range(2):  # a second replay is harmless: the catalog handles an id once
            assert operator.post(f"{LETTERS}/{letter['id']}/replay").status_code == 202
    eventually(lambda: stock_of(stack, item["id"]) == 7, what="stock reserved by the replay")
    time.sleep(1.5)
    assert stock_of(stack, item["id"]) == 7
    assert letter_of(stack, event_id)["replays"] == 2


def test_a_message_that_is_no_cloud_event_is_recorded_too(stack: Stack):
    marker = uuid.uuid4().hex
    dead_letter_as_the_sidecar_writes_it(stack, f"not a cloud event {marker}")

    def recorded() -> dict[str, Any] | None:
        with admin(stack) as operator:
            page = operator.get(LETTERS, params={"pageSize": 100}).json()
        return next(
            (x for x in page["items"] if x["payload"] == f"not a cloud event {marker}"), None
        )

    letter = eventually(recorded, timeout=10, what="the dead letter")
    assert letter["eventId"].startswith("sha256:")
    assert letter["replayable"] is False
