"""An admin's edit form and a checkout, through the whole stack: the basket publishes the order,
the catalog reserves the stock when the event arrives through its sidecar, and a form read before
that cannot put the stock back (RFC 9110 §13.1.1)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from devstack.stack import DEMO_DAPR_API_TOKEN, DEMO_JWT_SECRET, Stack
from devstack.testkit import (
    SHIPPING,
    assert_problem,
    eventually,
    new_product,
    patch_item,
    stock_of,
    unique_user,
)
from eshop_common.auth import mint_token

pytestmark = pytest.mark.usefixtures("stack")

WRITABLE = (
    "name", "description", "price", "pictureFileName", "catalogBrandId", "catalogTypeId",
    "availableStock", "restockThreshold", "maxStockThreshold",
)  # fmt: skip


def open_form(stack: Stack, item_id: int) -> tuple[dict[str, Any], str]:
    """What an edit form loads: the item and its ETag."""
    resp = httpx.get(f"{stack.url('catalog-api')}/api/catalog/items/{item_id}")
    assert resp.status_code == 200, resp.text
    return resp.json(), resp.headers["etag"]


def check_out(stack: Stack, product_id: int, quantity: int) -> None:
    token = mint_token(DEMO_JWT_SECRET, unique_user("form-race"))
    with httpx.Client(
        base_url=stack.url("basket-api"), headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as shopper:
        added = shopper.post(
            "/api/basket/items", json={"productId": product_id, "quantity": quantity}
        )
        assert added.status_code == 200, added.text
        accepted = shopper.post("/api/basket/checkout", json={"shipping": SHIPPING})
        assert accepted.status_code == 202, accepted.text


def save_form(stack: Stack, form: dict[str, Any], if_match: str, **changes: Any) -> httpx.Response:
    """The whole form sent back as a PUT, as the storefront's admin page did before it sent only
    what changed."""
    token = mint_token(DEMO_JWT_SECRET, "form-admin", admin=True)
    return httpx.put(
        f"{stack.url('catalog-api')}/api/catalog/items/{form['id']}",
        json={**{field: form[field] for field in WRITABLE}, **changes},
        headers={"Authorization": f"Bearer {token}", "If-Match": if_match},
    )


def test_a_form_read_before_a_checkout_cannot_undo_its_reservation(stack: Stack):
    item = new_product(stack, price=4.0, stock=10)
    form, etag = open_form(stack, item["id"])
    check_out(stack, item["id"], 3)
    eventually(lambda: stock_of(stack, item["id"]) == 7, what="the reservation of 3")

    # The admin changes the price only and saves: the reservation moved the version.
    assert_problem(patch_item(stack.url("catalog-api"), item["id"], {"price": 4.5}, etag=etag), 412)
    assert_problem(save_form(stack, form, etag, price=4.5), 412)
    assert stock_of(stack, item["id"]) == 7

    # Read again, the same change is accepted and the reservation stays.
    current, fresh = open_form(stack, item["id"])
    assert current["version"] > form["version"]
    saved = patch_item(stack.url("catalog-api"), item["id"], {"price": 4.5}, etag=fresh)
    assert saved.status_code == 200, saved.text
    assert (saved.json()["price"], saved.json()["availableStock"]) == (4.5, 7)


def test_control_the_same_form_saved_without_a_precondition_undoes_the_reservation(stack: Stack):
    """`If-Match: *` holds whatever the version (RFC 9110 §13.1.1): the save a PUT without a
    precondition used to be. The form's stock of 10 is written over the reservation."""
    item = new_product(stack, price=4.0, stock=10)
    form, _ = open_form(stack, item["id"])
    check_out(stack, item["id"], 3)
    eventually(lambda: stock_of(stack, item["id"]) == 7, what="the reservation of 3")

    saved = save_form(stack, form, "*", price=4.5)

    assert saved.status_code == 200, saved.text
    assert stock_of(stack, item["id"]) == 10, "the reservation of 3 is lost"


def test_the_etag_and_if_match_travel_through_service_invocation(stack: Stack):
    """The storefront reaches the catalog through its sidecar: the ETag must come back and the
    If-Match go forward unchanged, and the 412 and 428 come back as they were sent."""
    item = new_product(stack)
    invoke = f"{stack.dapr_url('webshop')}/v1.0/invoke/catalog-api/method/api/catalog/items"
    token = mint_token(DEMO_JWT_SECRET, "form-admin", admin=True)
    headers = {"dapr-api-token": DEMO_DAPR_API_TOKEN, "Authorization": f"Bearer {token}"}
    patch = {**headers, "Content-Type": "application/merge-patch+json"}

    read = httpx.get(f"{invoke}/{item['id']}", headers=headers)
    assert read.headers["etag"] == f'"{item["version"]}"'
    first = httpx.patch(f"{invoke}/{item['id']}", content=b'{"price": 1}',
                        headers={**patch, "If-Match": read.headers["etag"]})  # fmt: skip
    assert first.status_code == 200, first.text
    assert first.headers["etag"] != read.headers["etag"]
    stale = httpx.patch(f"{invoke}/{item['id']}", content=b'{"price": 2}',
                        headers={**patch, "If-Match": read.headers["etag"]})  # fmt: skip
    assert_problem(stale, 412)
    assert_problem(
        httpx.patch(f"{invoke}/{item['id']}", content=b'{"price": 2}', headers=patch), 428
    )
