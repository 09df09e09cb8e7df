"""Every item has a version, its ETag; PUT and PATCH change an item only at the version the client
read (If-Match), and a stock reservation moves the version, so a form read before it is stale."""

from __future__ import annotations

import json
import threading
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from catalog import repository
from catalog.errors import StaleItem
from catalog.events import UserCheckoutAccepted
from catalog.models import CatalogItem
from catalog.service import ReservationOutcome, reserve_stock

MERGE_PATCH = "application/merge-patch+json"
WRITABLE = (
    "name", "description", "price", "pictureFileName", "catalogBrandId", "catalogTypeId",
    "availableStock", "restockThreshold", "maxStockThreshold",
)  # fmt: skip
INT32_MAX = 2**31 - 1


def etag(item: dict[str, Any]) -> str:
    return f'"{item["version"]}"'


def url(item: dict[str, Any]) -> str:
    return f"/api/catalog/items/{item['id']}"


def form_of(item: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """What an edit form built from `item` sends back as a PUT: every field, as it was read."""
    return {**{field: item[field] for field in WRITABLE}, **changes}


def put(api, item: dict[str, Any], body: dict[str, Any], if_match: str | None):
    headers = dict(api.admin_headers)
    if if_match is not None:
        headers["If-Match"] = if_match
    return api.client.put(url(item), json=body, headers=headers)


def patch(api, item: dict[str, Any], body: Any, if_match: str | None, media_type=MERGE_PATCH):
    headers = {**api.admin_headers, "Content-Type": media_type}
    if if_match is not None:
        headers["If-Match"] = if_match
    return api.client.patch(url(item), content=json.dumps(body), headers=headers)


def reserve(db: Engine, item: dict[str, Any], quantity: int) -> ReservationOutcome:
    """What the catalog does when a UserCheckoutAccepted names the item."""
    checkout = UserCheckoutAccepted.model_validate(
        {
            "requestId": str(uuid.uuid4()),
            "buyerId": "alice",
            "items": [{"productId": item["id"], "quantity": quantity}],
        }
    )
    return reserve_stock(sessionmaker(db), str(uuid.uuid4()), checkout)


# -- the version and its ETag ------------------------------------------------------------


def test_every_item_response_carries_its_version_as_a_strong_etag(api):
    """RFC 9110 §8.8.3: a strong validator, quoted, that changes whenever the item does."""
    created = api.client.post("/api/catalog/items", json=api.new_item(), headers=api.admin_headers)
    assert created.status_code == 201
    item = created.json()
    assert (item["version"], created.headers["etag"]) == (1, '"1"')

    read = api.client.get(url(item))
    assert (read.json(), read.headers["etag"]) == (item, '"1"')

    replaced = put(api, item, form_of(item, price=3), etag(item))
    assert replaced.status_code == 200, replaced.text
    assert (replaced.json()["version"], replaced.headers["etag"]) == (2, '"2"')

    patched = patch(api, item, {"description": "patched"}, replaced.headers["etag"])
    assert patched.status_code == 200, patched.text
    assert (patched.json()["version"], patched.headers["etag"]) == (3, '"3"')

    listed = api.list_items(q=item["name"])["items"]
    assert [(i["id"], i["version"]) for i in listed] == [(item["id"], 3)]


@pytest.mark.parametrize("method", [put, patch])
def test_a_change_without_if_match_is_a_428_and_changes_nothing(api, assert_problem, method):
    """RFC 6585 §3: 428 Precondition Required, when the server requires the request to be
    conditional, "to avoid the 'lost update' problem"; the problem says where the ETag is."""
    item = api.create_item(price=4, availableStock=10)
    body = form_of(item, price=5) if method is put else {"price": 5}

    problem = assert_problem(method(api, item, body, if_match=None), 428)

    assert problem["type"] == "/problems/precondition-required"
    assert "If-Match" in problem["detail"]
    assert f"GET /api/catalog/items/{item['id']}" in problem["detail"]
    assert api.get_item(item["id"]) == item


@pytest.mark.parametrize("method", [put, patch])
def test_a_change_with_a_stale_etag_is_a_412_and_changes_nothing(api, assert_problem, method):
    """RFC 9110 §13.1.1: If-Match names a version the item is no longer at, so the condition is
    false and the origin server must not perform the method: 412 (§15.5.13)."""
    item = api.create_item(price=4, availableStock=10)
    current = patch(api, item, {"description": "changed by someone else"}, etag(item)).json()
    body = form_of(item, price=5) if method is put else {"price": 5}

    problem = assert_problem(method(api, item, body, if_match=etag(item)), 412)

    assert problem["type"] == "/problems/precondition-failed"
    assert problem["itemId"] == item["id"]
    assert api.get_item(item["id"]) == current


def test_a_weak_etag_never_matches_if_match(api, assert_problem):
    """RFC 9110 §13.1.1: If-Match uses the strong comparison (§8.8.3.2), so W/"1" is not "1"."""
    item = api.create_item()
    assert_problem(patch(api, item, {"price": 1}, f"W/{etag(item)}"), 412)
    assert patch(api, item, {"price": 1}, etag(item)).status_code == 200


@pytest.mark.parametrize("value", ["1", "abc", '"1', '"1" "2"', '*, "1"', "W/1"])
def test_a_malformed_if_match_is_a_400_naming_the_header(api, assert_problem, value):
    """RFC 9110 §13.1.1: If-Match = "*" / #entity-tag; anything else is not a precondition."""
    item = api.create_item()
    assert_problem(patch(api, item, {"price": 1}, value), 400, "If-Match")
    assert api.get_item(item["id"]) == item


def test_if_match_star_or_a_list_holding_the_current_etag_lets_the_change_through(api):
    """RFC 9110 §13.1.1: `*` is true when the item exists; a list when one member matches."""
    item = api.create_item(price=4)
    listed = patch(api, item, {"price": 5}, f'"999", {etag(item)}')
    assert listed.status_code == 200, listed.text
    star = patch(api, item, {"price": 6}, "*")
    assert star.status_code == 200, star.text
    assert star.json()["version"] == item["version"] + 2


def test_an_unknown_item_is_a_404_whatever_the_condition(api, assert_problem):
    """RFC 9110 §13.2.1: without the condition the answer would be 404, so it is not evaluated."""
    missing = {"id": 2_000_000_000}
    assert_problem(patch(api, missing, {"price": 1}, '"1"'), 404)
    assert_problem(patch(api, missing, {"price": 1}, "*"), 404)


# -- stock reservations and the stale form ---------------------------------------------------


def test_a_stock_reservation_moves_the_version(api, db):
    item = api.create_item(availableStock=10)
    assert reserve(db, item, 3) == ReservationOutcome.RESERVED
    after = api.get_item(item["id"])
    assert (after["availableStock"], after["version"]) == (7, item["version"] + 1)


def test_a_refused_reservation_leaves_the_version(api, db):
    item = api.create_item(availableStock=2)
    assert reserve(db, item, 3) == ReservationOutcome.REJECTED
    assert api.get_item(item["id"]) == item


def test_a_form_read_before_a_reservation_cannot_put_the_stock_back(api, db, assert_problem):
    """The admin opens the form (price 4, stock 10), a checkout reserves 3, the admin saves a new
    price: the form's stock 10 must not undo the reservation. RFC 9110 §13.1.1: 412."""
    item = api.create_item(price=4, availableStock=10)
    form = form_of(item, price=4.5)
    assert reserve(db, item, 3) == ReservationOutcome.RESERVED

    assert_problem(put(api, item, form, etag(item)), 412)
    assert_problem(patch(api, item, {"price": 4.5}, etag(item)), 412)
    assert api.get_item(item["id"])["availableStock"] == 7

    # Read again, the change goes through and the reservation stays.
    fresh = api.get_item(item["id"])
    saved = patch(api, item, {"price": 4.5}, etag(fresh))
    assert saved.status_code == 200, saved.text
    assert (saved.json()["price"], saved.json()["availableStock"]) == (4.5, 7)


def test_control_the_same_stale_form_saved_unconditionally_undoes_the_reservation(api, db):
    """The control: `If-Match: *` holds for any version (RFC 9110 §13.1.1), as no precondition
    did before; the stale form then writes its stock over the reservation."""
    item = api.create_item(price=4, availableStock=10)
    form = form_of(item, price=4.5)
    assert reserve(db, item, 3) == ReservationOutcome.RESERVED

    saved = put(api, item, form, "*")

    assert saved.status_code == 200, saved.text
    assert saved.json()["availableStock"] == 10, "the reservation of 3 is lost"


# -- merge patches -----------------------------------------------------------------------------

# A name must be unique among items, and Hypothesis repeats values: the test fills each template
# with a fresh name (and the service strips the whitespace around it).
name_templates = st.sampled_from(["{}", "  {} ", "\t{}\n"])
descriptions = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)
prices = st.decimals(min_value=0, max_value=Decimal("99999999.99"), places=2)
pictures = st.sampled_from([None, "ridgeline-dome-2-tent.svg", "northwind-camp-lantern.svg"])
quantities = st.integers(min_value=0, max_value=INT32_MAX)
FIELDS = {
    "name": name_templates,
    "description": descriptions,
    "price": st.one_of(prices.map(str), prices.map(float)),
    "pictureFileName": pictures,
    "catalogBrandId": st.integers(min_value=1, max_value=6),
    "catalogTypeId": st.integers(min_value=1, max_value=7),
    "availableStock": quantities,
    "restockThreshold": quantities,
    "maxStockThreshold": quantities,
}
merge_patches = st.fixed_dictionaries({}, optional=FIELDS)


def expected_value(field: str, value: Any) -> Any:
    if field == "price":
        return float(Decimal(value))
    return value.strip() if field == "name" else value


@given(changes=merge_patches)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_a_patch_changes_the_fields_it_names_and_leaves_every_other(api, new_name, changes):
    """RFC 7396 §2: a member of the patch replaces the target's member; members the patch does
    not name are left as they are."""
    item = api.create_item()
    if "name" in changes:
        changes["name"] = changes["name"].format(new_name())
    response = patch(api, item, changes, etag(item))
    assert response.status_code == 200, response.text
    after = response.json()

    for field in WRITABLE:
        wanted = expected_value(field, changes[field]) if field in changes else item[field]
        assert after[field] == wanted, field
    moved = any(after[field] != item[field] for field in WRITABLE)
    assert after["version"] == item["version"] + moved
    assert response.headers["etag"] == etag(after)
    assert api.get_item(item["id"]) == after


def test_a_null_picture_takes_the_picture_away(api):
    """RFC 7396 §2: null in a merge patch removes the member; the picture is the one that may
    be absent."""
    item = api.create_item(pictureFileName="ridgeline-dome-2-tent.svg")
    after = patch(api, item, {"pictureFileName": None}, etag(item)).json()
    assert (after["pictureFileName"], after["pictureUrl"]) == (None, None)


@pytest.mark.parametrize("field", [f for f in WRITABLE if f != "pictureFileName"])
def test_null_for_a_field_that_cannot_be_absent_is_a_422_naming_it(api, assert_problem, field):
    """RFC 7396 §2 would remove the member; an item cannot be without it, so the result would
    not be an item: 422 (RFC 9110 §15.5.21), as for any other value the item cannot take."""
    item = api.create_item()
    assert_problem(patch(api, item, {field: None}, etag(item)), 422, field)
    assert api.get_item(item["id"]) == item


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"version": 9}, "version"),
        ({"id": 1}, "id"),
        ({"catalogBrand": "Acme"}, "catalogBrand"),
        ({"availableStock": "7"}, "availableStock"),
        ({"availableStock": -1}, "availableStock"),
        ({"price": True}, "price"),
        ({"name": ["a"]}, "name"),
    ],
)
def test_unknown_read_only_or_mistyped_members_are_422_naming_them(
    api, assert_problem, body, field
):
    item = api.create_item()
    assert_problem(patch(api, item, body, etag(item)), 422, field)
    assert api.get_item(item["id"]) == item


@pytest.mark.parametrize("body", [[], ["price", 1], "cheap", 3, None])
def test_a_patch_that_is_not_an_object_is_a_422(api, assert_problem, body):
    """RFC 7396 §2: a patch that is not an object replaces the whole target, which would then not
    be an item."""
    item = api.create_item()
    assert_problem(patch(api, item, body, etag(item)), 422)
    assert api.get_item(item["id"]) == item


def test_a_patch_that_is_not_json_is_a_400(api, assert_problem):
    item = api.create_item()
    headers = {**api.admin_headers, "Content-Type": MERGE_PATCH, "If-Match": etag(item)}
    assert_problem(api.client.patch(url(item), content=b'{"price": 1', headers=headers), 400)


@pytest.mark.parametrize("media_type", ["application/json", "application/json-patch+json", ""])
def test_a_patch_in_another_media_type_is_a_415_naming_the_one_it_takes(
    api, assert_problem, media_type
):
    """RFC 5789 §2.2: a patch document in a format the resource does not take is 415, with
    Accept-Patch (§3.1) naming the format it does take."""
    item = api.create_item()
    response = patch(api, item, {"price": 1}, etag(item), media_type=media_type)
    assert_problem(response, 415)
    assert response.headers["accept-patch"] == MERGE_PATCH
    assert api.get_item(item["id"]) == item


def test_an_empty_patch_changes_nothing_and_keeps_the_etag(api):
    """RFC 7396: `{}` names no member; RFC 9110 §8.8.3: the representation, and so its strong
    validator, is what it was."""
    item = api.create_item()
    response = patch(api, item, {}, etag(item))
    assert response.status_code == 200
    assert (response.json(), response.headers["etag"]) == (item, etag(item))


def test_a_price_patch_writes_the_price_change_event(api, db):
    item = api.create_item(price=10)
    assert patch(api, item, {"price": "11.50"}, etag(item)).status_code == 200
    with db.connect() as conn:
        payloads = conn.execute(
            text("select payload from outbox_message where payload->>'productId' = :id"),
            {"id": str(item["id"])},
        ).scalars().all()  # fmt: skip
    assert payloads == [
        {"productId": item["id"], "price": 11.5, "oldPrice": 10.0, "priceVersion": 1}
    ]


# -- at the same time --------------------------------------------------------------------------


def send_at_once(api, item: dict[str, Any], if_match: str, writers: int) -> list[int]:
    """`writers` PATCHes of one item, released together, each with its own description."""
    start = threading.Barrier(writers)
    statuses: list[int] = [0] * writers

    def write(n: int) -> None:
        start.wait()
        statuses[n] = patch(api, item, {"description": f"writer {n}"}, if_match).status_code

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_patches_sent_at_once_with_one_etag_change_the_item_once(api):
    """RFC 9110 §13.1.1: each PATCH names the version all of them read; the first to write moves
    it, so every other finds its condition false: one 200, the rest 412."""
    item = api.create_item()
    statuses = send_at_once(api, item, etag(item), writers=8)

    assert sorted(statuses) == [200] + [412] * 7
    after = api.get_item(item["id"])
    assert after["version"] == item["version"] + 1
    assert after["description"] == f"writer {statuses.index(200)}"


def test_control_patches_sent_at_once_unconditionally_each_write_over_the_last(api):
    """The control: with `If-Match: *` all eight are accepted, and seven of the descriptions
    they were told were saved are gone."""
    item = api.create_item()
    statuses = send_at_once(api, item, "*", writers=8)

    assert statuses == [200] * 8
    assert api.get_item(item["id"])["version"] == item["version"] + 8


def test_an_orm_write_over_a_version_that_moved_is_refused(api, db):
    """version_id_col: the UPDATE carries `WHERE version = <read>`, so a write over an item that
    changed after it was read (here without the row lock the API takes) matches no row: 412."""
    item = api.create_item(availableStock=10)
    with Session(db) as session:
        stale = session.get(CatalogItem, item["id"])
        assert stale is not None
        assert reserve(db, item, 3) == ReservationOutcome.RESERVED
        stale.price = Decimal("1.00")
        with pytest.raises(StaleItem):
            repository.save_item(session, stale)
    after = api.get_item(item["id"])
    assert (after["price"], after["availableStock"]) == (item["price"], 7)


def test_control_the_same_orm_write_without_a_change_in_between_is_made(api, db):
    item = api.create_item(availableStock=10)
    with sessionmaker(db).begin() as session:
        current = session.get(CatalogItem, item["id"])
        assert current is not None
        current.price = Decimal("1.00")
        saved = repository.save_item(session, current)
        assert saved.version == item["version"] + 1
