"""The catalog's side of the events, at the database: the outbox row commits with the price
change and only with it; stock is reserved all-or-nothing, once per event id."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import Engine, text
from sqlalchemy.orm import sessionmaker

from catalog import repository
from catalog.events import UserCheckoutAccepted
from catalog.service import ReservationOutcome, reserve_stock


def outbox_rows(db: Engine, product_id: int) -> list[dict]:
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "select topic, event_type, payload from outbox_message "
                "where payload->>'productId' = :id order by id"
            ),
            {"id": str(product_id)},
        )
        return [dict(row._mapping) for row in rows]


def test_a_price_change_writes_one_outbox_event_with_the_next_price_version(api, db):
    item = api.create_item(price=10)
    body = {k: v for k, v in item.items() if k in api.new_item()}
    api.client.put(
        f"/api/catalog/items/{item['id']}", json={**body, "price": 11}, headers=api.at_version(item)
    )
    changed = api.get_item(item["id"])

    assert changed["priceVersion"] == 1
    assert outbox_rows(db, item["id"]) == [
        {
            "topic": "product-price-changed",
            "event_type": "ProductPriceChanged",
            "payload": {
                "productId": item["id"],
                "price": 11.0,
                "oldPrice": 10.0,
                "priceVersion": 1,
            },
        }
    ]


def test_an_update_that_keeps_the_price_writes_no_event(api, db):
    item = api.create_item(price=10)
    body = {k: v for k, v in item.items() if k in api.new_item()}
    resp = api.client.put(
        f"/api/catalog/items/{item['id']}", json={**body, "availableStock": 99},
        headers=api.at_version(item),
    )  # fmt: skip
    assert resp.status_code == 200
    assert api.get_item(item["id"])["priceVersion"] == 0
    assert outbox_rows(db, item["id"]) == []


def test_a_price_change_that_fails_leaves_no_event_behind(api, db):
    taken = api.create_item()
    item = api.create_item(price=10)
    body = {k: v for k, v in item.items() if k in api.new_item()}
    resp = api.client.put(
        f"/api/catalog/items/{item['id']}", json={**body, "price": 12, "name": taken["name"]},
        headers=api.at_version(item),
    )  # fmt: skip
    assert resp.status_code == 409
    assert api.get_item(item["id"])["price"] == 10
    assert outbox_rows(db, item["id"]) == []


def checkout(*lines: tuple[int, int]) -> UserCheckoutAccepted:
    return UserCheckoutAccepted.model_validate(
        {
            "requestId": str(uuid.uuid4()),
            "buyerId": "alice",
            "items": [{"productId": p, "quantity": q} for p, q in lines],
        }
    )


def test_stock_is_reserved_once_however_often_the_event_arrives(api, db):
    item = api.create_item(availableStock=10)
    factory = sessionmaker(db)
    event = checkout((item["id"], 3))
    event_id = str(uuid.uuid4())

    assert reserve_stock(factory, event_id, event) == ReservationOutcome.RESERVED
    assert reserve_stock(factory, event_id, event) == ReservationOutcome.DUPLICATE
    assert api.get_item(item["id"])["availableStock"] == 7


def test_a_reservation_queues_stock_reserved_with_it(api, db):
    item = api.create_item(availableStock=4)
    event = checkout((item["id"], 1))
    assert reserve_stock(sessionmaker(db), str(uuid.uuid4()), event) == ReservationOutcome.RESERVED
    with db.connect() as conn:
        queued = conn.execute(
            text("select topic, payload from outbox_message where payload->>'requestId' = :id"),
            {"id": event.request_id},
        ).all()
    assert [tuple(row) for row in queued] == [
        ("stock-reserved", {"requestId": event.request_id, "buyerId": "alice"})
    ]


def test_deleting_an_item_queues_product_deleted_in_the_same_transaction(api, db):
    item = api.create_item()
    deleted = api.client.delete(f"/api/catalog/items/{item['id']}", headers=api.admin_headers)
    assert deleted.status_code == 204
    with db.connect() as conn:
        queued = conn.execute(
            text("select topic, payload from outbox_message where topic = 'product-deleted' "
                 "and (payload->>'productId')::int = :id"),
            {"id": item["id"]},
        ).all()  # fmt: skip
    assert [tuple(row) for row in queued] == [("product-deleted", {"productId": item["id"]})]


def test_a_reservation_short_on_one_line_takes_nothing_and_queues_a_rejection(api, db):
    short = api.create_item(availableStock=1)
    enough = api.create_item(availableStock=5)
    factory = sessionmaker(db)
    event = checkout((enough["id"], 2), (short["id"], 2))
    event_id = str(uuid.uuid4())

    assert reserve_stock(factory, event_id, event) == ReservationOutcome.REJECTED
    assert reserve_stock(factory, event_id, event) == ReservationOutcome.DUPLICATE
    assert api.get_item(short["id"])["availableStock"] == 1
    assert api.get_item(enough["id"])["availableStock"] == 5
    with db.connect() as conn:
        payloads = (
            conn.execute(
                text("select payload from outbox_message where payload->>'requestId' = :id"),
                {"id": event.request_id},
            )
            .scalars()
            .all()
        )
    assert payloads == [
        {
            "requestId": event.request_id,
            "buyerId": "alice",
            "reason": "not enough stock",
            "shortages": [{"productId": short["id"], "requested": 2, "available": 1}],
            # The checkout's lines, for the basket to give back.
            "items": [line.model_dump(mode="json", by_alias=True) for line in event.items],
        }
    ]


# -- retention -------------------------------------------------------------------------------


def age_events(db: Engine, event_ids: list[str], days: int) -> None:
    """Make handled events and outbox rows look `days` old, as if the clock had moved on."""
    with db.begin() as conn:
        conn.execute(
            text("update processed_event set processed_at = now() - make_interval(days => :d) "
                 "where event_id = any(:ids)"),
            {"d": days, "ids": event_ids},
        )  # fmt: skip


def test_handled_event_ids_past_the_window_are_removed_and_those_inside_still_deduplicate(api, db):
    item = api.create_item(availableStock=10)
    factory = sessionmaker(db)
    old, recent = str(uuid.uuid4()), str(uuid.uuid4())
    assert reserve_stock(factory, old, checkout((item["id"], 1))) == ReservationOutcome.RESERVED
    assert reserve_stock(factory, recent, checkout((item["id"], 1))) == ReservationOutcome.RESERVED
    age_events(db, [old], days=8)

    with factory.begin() as session:
        repository.remove_expired_events(session, timedelta(days=7))

    with db.connect() as conn:
        kept = conn.execute(
            text("select event_id from processed_event where event_id = any(:ids)"),
            {"ids": [old, recent]},
        ).scalars().all()  # fmt: skip
    assert kept == [recent]
    # A replay inside the window is still a duplicate: the stock moves once.
    event = checkout((item["id"], 1))
    assert reserve_stock(factory, recent, event) == ReservationOutcome.DUPLICATE
    assert api.get_item(item["id"])["availableStock"] == 8


def test_published_outbox_rows_past_the_window_go_and_unpublished_ones_stay_however_old(api, db):
    items = [api.create_item(price=10) for _ in range(3)]
    for item in items:
        body = {k: v for k, v in item.items() if k in api.new_item()}
        resp = api.client.put(f"/api/catalog/items/{item['id']}", json={**body, "price": 12},
                              headers=api.at_version(item))  # fmt: skip
        assert resp.status_code == 200
    old_published, new_published, old_unpublished = (str(item["id"]) for item in items)
    with db.begin() as conn:
        conn.execute(
            text("update outbox_message set created_at = now() - interval '30 days', "
                 "published_at = case payload->>'productId' "
                 "  when :old then now() - interval '8 days' when :new then now() "
                 "  else null end "
                 "where payload->>'productId' = any(:ids)"),
            {"old": old_published, "new": new_published,
             "ids": [old_published, new_published, old_unpublished]},
        )  # fmt: skip

    with sessionmaker(db).begin() as session:
        removed = repository.remove_expired_events(session, timedelta(days=7))

    assert removed[0] >= 1
    assert outbox_rows(db, int(old_published)) == []
    assert len(outbox_rows(db, int(new_published))) == 1
    assert len(outbox_rows(db, int(old_unpublished))) == 1
