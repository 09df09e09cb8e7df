"""Dead letters at the catalog: what the `deadletter` subscription's handler records, what an
admin sees, and the line between an event that may pass later (RETRY) and one that never will
(DROP). The sidecar's side, retries and replays that reach a subscriber, is tests/e2e."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from catalog.config import Settings
from catalog.db_cli import load_seed, migrate
from catalog.main import create_catalog_app
from devstack.procs import free_port
from devstack.pytest_plugin import throwaway_postgres

LETTERS = "/api/catalog/admin/dead-letters"


@pytest.fixture(scope="module")
def app_client(settings: Settings) -> Iterator[TestClient]:
    """The catalog with a sidecar port nobody listens on: a replay cannot be published."""
    no_sidecar = settings.model_copy(update={"dapr_http_port": free_port()})
    with TestClient(create_catalog_app(no_sidecar)) as client:
        yield client


def cloud_event(data: Any, *, topic: str = "user-checkout-accepted", **fields: Any) -> dict:
    """A CloudEvent as the sidecar publishes it."""
    return {
        "id": str(uuid.uuid4()),
        "specversion": "1.0",
        "source": "basket-api",
        "type": "UserCheckoutAccepted",
        "datacontenttype": "application/json",
        "pubsubname": "pubsub",
        "topic": topic,
        "data": data,
        **fields,
    }


def as_delivered(message: dict | bytes) -> dict:
    """What the sidecar posts for a message on `deadletter`: the subscription has rawPayload,
    so the message comes as it lies on the topic, base64, in an envelope of the sidecar's."""
    raw = message if isinstance(message, bytes) else json.dumps(message).encode()
    return {
        "id": str(uuid.uuid4()),
        "specversion": "1.0",
        "source": "Dapr",
        "type": "com.dapr.event.sent",
        "datacontenttype": "application/octet-stream",
        "topic": "deadletter",
        "pubsubname": "pubsub",
        "data_base64": base64.b64encode(raw).decode(),
    }


def arrive(client: TestClient, message: dict | bytes) -> None:
    resp = client.post("/events/dead-letters", json=as_delivered(message))
    assert resp.json() == {"status": "SUCCESS"}, resp.text


def letter_of(client: TestClient, admin_headers: dict, event_id: str) -> dict[str, Any]:
    resp = client.get(LETTERS, params={"eventId": event_id}, headers=admin_headers)
    assert resp.status_code == 200, resp.text
    (letter,) = resp.json()["items"]
    return letter


CHECKOUT = {"requestId": "r-1", "buyerId": "alice", "items": [{"productId": 1, "quantity": 2}]}


def test_a_dead_letter_is_recorded_once_and_each_arrival_counted(app_client, admin_headers, caplog):
    event = cloud_event(CHECKOUT)
    arrive(app_client, event)
    arrive(app_client, event)

    letter = letter_of(app_client, admin_headers, event["id"])
    assert letter["topic"] == "user-checkout-accepted"
    assert (letter["type"], letter["source"]) == ("UserCheckoutAccepted", "basket-api")
    assert letter["payload"] == CHECKOUT
    assert letter["deliveries"] == 2
    assert letter["reason"] is None
    assert letter["replayable"] is True
    assert (letter["replays"], letter["replayedAt"]) == (0, None)
    logged = [r.getMessage() for r in caplog.records if event["id"] in r.getMessage()]
    assert logged[-1].startswith(f"dead letter {event['id']} from topic user-checkout-accepted")
    assert "arrival 2: no reason recorded" in logged[-1]

    one = app_client.get(f"{LETTERS}/{letter['id']}", headers=admin_headers)
    assert one.json() == letter


def test_a_checkout_event_the_catalog_cannot_read_is_dropped_with_its_reason(
    app_client, admin_headers
):
    event = cloud_event({"requestId": "no items", "buyerId": "bob"})
    resp = app_client.post("/events/user-checkout-accepted", json=event)
    assert resp.json() == {"status": "DROP"}

    noted = letter_of(app_client, admin_headers, event["id"])
    assert noted["deliveries"] == 0, "the letter itself has not arrived yet"
    assert noted["replayable"] is False
    assert noted["reason"].startswith("malformed UserCheckoutAccepted: items: Field required")

    arrive(app_client, event)  # the sidecar's copy, from the dead-letter topic
    letter = letter_of(app_client, admin_headers, event["id"])
    assert letter["deliveries"] == 1
    assert letter["reason"] == noted["reason"]
    assert letter["payload"] == event["data"]
    assert letter["replayable"] is True


@pytest.mark.parametrize(
    "line",
    [
        {"productId": 2**31, "quantity": 1},  # no product can have that id
        {"productId": 1, "quantity": 0},
        {"productId": "one", "quantity": 1},
    ],
)
def test_a_checkout_line_no_product_can_match_is_dropped(app_client, line):
    event = cloud_event({"requestId": "r", "buyerId": "b", "items": [line]})
    resp = app_client.post("/events/user-checkout-accepted", json=event)
    assert resp.json() == {"status": "DROP"}


def test_values_the_database_refuses_are_dropped_and_change_nothing(app_client, api, admin_headers):
    item = api.create_item(availableStock=5)
    # PostgreSQL's JSON cannot hold a NUL character: the StockReserved it would queue is refused.
    data = {
        "requestId": "a\x00b",
        "buyerId": "c",
        "items": [{"productId": item["id"], "quantity": 1}],
    }
    event = cloud_event(data)
    resp = app_client.post("/events/user-checkout-accepted", json=event)

    assert resp.json() == {"status": "DROP"}
    assert api.get_item(item["id"])["availableStock"] == 5
    assert "the database refused it" in letter_of(app_client, admin_headers, event["id"])["reason"]

    arrive(app_client, event)  # and the letter itself, NUL and all, is kept
    assert letter_of(app_client, admin_headers, event["id"])["payload"] == data


def test_a_message_that_is_no_cloud_event_is_kept_under_a_digest_and_cannot_be_replayed(
    app_client, admin_headers, assert_problem
):
    message = b"not JSON at all \x00 " + uuid.uuid4().bytes
    arrive(app_client, message)
    arrive(app_client, message)

    page = app_client.get(LETTERS, params={"pageSize": 100}, headers=admin_headers).json()
    (letter,) = [
        x for x in page["items"] if x["payload"] == message.decode("utf-8", errors="replace")
    ]
    assert letter["eventId"].startswith("sha256:")
    assert (letter["topic"], letter["deliveries"], letter["replayable"]) == (None, 2, False)
    assert letter["reason"].startswith("not a CloudEvent")

    resp = app_client.post(f"{LETTERS}/{letter['id']}/replay", headers=admin_headers)
    body = assert_problem(resp, 409)
    assert body["type"] == "/problems/dead-letter-not-replayable"


def test_an_event_id_no_column_can_hold_is_kept_under_its_digest(app_client, admin_headers):
    event = cloud_event(CHECKOUT, id="x" * 300)
    arrive(app_client, event)
    arrive(app_client, event)
    page = app_client.get(LETTERS, params={"pageSize": 100}, headers=admin_headers).json()
    ids = [x["eventId"] for x in page["items"] if x["deliveries"] == 2 and x["payload"] == CHECKOUT]
    assert any(i.startswith("sha256:") for i in ids)


def test_the_list_pages_and_filters_by_topic_newest_first(app_client, admin_headers):
    topic = f"test-topic-{uuid.uuid4().hex[:8]}"
    events = [cloud_event({"n": n}, topic=topic) for n in range(3)]
    for event in events:
        arrive(app_client, event)
        time.sleep(0.01)

    page = app_client.get(
        LETTERS, params={"topic": topic, "pageSize": 2}, headers=admin_headers
    ).json()
    assert (page["count"], page["pageSize"]) == (3, 2)
    assert [x["payload"] for x in page["items"]] == [{"n": 2}, {"n": 1}]
    rest = app_client.get(
        LETTERS, params={"topic": topic, "pageSize": 2, "pageIndex": 1}, headers=admin_headers
    ).json()
    assert [x["payload"] for x in rest["items"]] == [{"n": 0}]


def test_dead_letters_are_for_admins(app_client, user_headers, admin_headers, assert_problem):
    event = cloud_event(CHECKOUT)
    arrive(app_client, event)
    letter_id = letter_of(app_client, admin_headers, event["id"])["id"]
    for method, path in (
        ("GET", LETTERS),
        ("GET", f"{LETTERS}/{letter_id}"),
        ("POST", f"{LETTERS}/{letter_id}/replay"),
    ):
        assert_problem(app_client.request(method, path), 401)
        assert_problem(app_client.request(method, path, headers=user_headers), 403)


def test_an_unknown_dead_letter_is_a_404(app_client, admin_headers, assert_problem):
    for method, path in (("GET", f"{LETTERS}/999999999"), ("POST", f"{LETTERS}/999999999/replay")):
        assert_problem(app_client.request(method, path, headers=admin_headers), 404)


def test_a_replay_the_sidecar_cannot_publish_is_a_503_and_counts_nothing(
    app_client, admin_headers, assert_problem
):
    event = cloud_event(CHECKOUT)
    arrive(app_client, event)
    letter = letter_of(app_client, admin_headers, event["id"])

    resp = app_client.post(f"{LETTERS}/{letter['id']}/replay", headers=admin_headers)
    body = assert_problem(resp, 503)
    assert body["type"] == "/problems/pubsub-unavailable"
    assert resp.headers["retry-after"]
    assert letter_of(app_client, admin_headers, event["id"])["replays"] == 0


def test_a_letter_older_than_the_event_retention_is_not_replayed(
    app_client, admin_headers, db, assert_problem
):
    event = cloud_event(CHECKOUT)
    arrive(app_client, event)
    with db.begin() as conn:
        conn.execute(
            text("update dead_letter set first_seen_at = now() - interval '40 days' "
                 "where event_id = :id"),
            {"id": event["id"]},
        )  # fmt: skip
    letter = letter_of(app_client, admin_headers, event["id"])
    resp = app_client.post(f"{LETTERS}/{letter['id']}/replay", headers=admin_headers)
    assert "retention" in assert_problem(resp, 409)["detail"]


def test_with_the_database_away_events_are_retried_and_poison_is_still_dropped(admin_headers):
    with throwaway_postgres("catalog-dead-letters-pg-") as server:
        url = server.create_database("catalog")
        migrate(url)
        load_seed(url)
        settings = Settings(
            database_url=url, db_connect_timeout=2, db_pool_timeout=1, outbox_relay_enabled=False
        )
        with TestClient(create_catalog_app(settings)) as client:
            server.stop()
            good = cloud_event(CHECKOUT)
            assert client.post("/events/user-checkout-accepted", json=good).json() == {
                "status": "RETRY"
            }
            assert client.post("/events/dead-letters", json=as_delivered(good)).json() == {
                "status": "RETRY"
            }
            poison = cloud_event({"requestId": "no items"})
            assert client.post("/events/user-checkout-accepted", json=poison).json() == {
                "status": "DROP"
            }
            server.start()


def test_a_filter_given_twice_is_a_422_not_one_of_them(app_client, admin_headers, assert_problem):
    resp = app_client.get(f"{LETTERS}?eventId=a&eventId=b", headers=admin_headers)
    assert_problem(resp, 422, "eventId")
