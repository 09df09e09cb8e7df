"""A stored basket is validated when it is read: older schema versions are migrated, and a value
of any other shape (written past the API, straight through the state store) is a 409 problem
that PUT or DELETE gets past, never a 500, on both stores."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.stack import DEMO_JWT_SECRET, Stack
from devstack.testkit import SHIPPING, assert_problem, new_product, sidecar_state, store_entry
from devstack.testkit import unique_user as buyer
from eshop_common.auth import mint_token

SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
JSON = st.recursive(
    SCALARS | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
ODD_BASKETS = st.one_of(
    JSON,
    st.fixed_dictionaries({"buyerId": st.text(max_size=10)}),
    st.fixed_dictionaries({"buyerId": st.just("someone-else"), "items": JSON}),
)


@settings(
    max_examples=25, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
@given(value=ODD_BASKETS)
def test_a_stored_value_of_another_shape_is_a_409_problem_never_a_500(
    basket_stack: Stack, as_user, value: Any
):
    me = buyer()
    store_entry(basket_stack, me, value)
    client = as_user(me)
    read = client.get("/api/basket")
    if read.status_code == 200:  # a value that happens to be a basket of this buyer's
        return
    assert_problem(read, 409)
    assert_problem(client.post("/api/basket/items", json={"productId": 1}), 409)
    assert_problem(client.post("/api/basket/checkout", json={"shipping": SHIPPING}), 409)


def test_put_or_delete_replaces_an_unreadable_basket(basket_stack: Stack, as_user, products):
    for replace in ("put", "delete"):
        me = buyer()
        store_entry(basket_stack, me, {"buyerId": "someone-else", "items": []})
        client = as_user(me)
        problem = assert_problem(client.get("/api/basket"), 409)
        assert problem["type"].endswith("/unreadable-basket")
        # A precondition naming a tag cannot match what cannot be read (RFC 9110 §13.1.1).
        stale = client.put("/api/basket", json={"items": []}, headers={"If-Match": '"x"'})
        assert_problem(stale, 412)
        if replace == "put":
            body = {"items": [{"productId": products[0]["id"], "quantity": 2}]}
            assert client.put("/api/basket", json=body).status_code == 200
        else:
            assert client.delete("/api/basket").status_code == 204
        assert client.get("/api/basket").status_code == 200


def test_a_basket_saved_by_the_first_schema_version_is_migrated_on_read(
    basket_stack: Stack, as_user, products
):
    me, old_checkout = buyer(), str(uuid.uuid4())
    product = products[0]
    store_entry(basket_stack, me, {
        "buyerId": me, "revision": str(uuid.uuid4()), "checkouts": [old_checkout],
        "items": [{"productId": product["id"], "productName": product["name"],
                   "unitPrice": product["price"], "quantity": 1}],
    })  # fmt: skip
    client = as_user(me)
    assert [line["quantity"] for line in client.get("/api/basket").json()["items"]] == [1]
    status = client.get(f"/api/basket/checkouts/{old_checkout}")
    assert status.json() == {"requestId": old_checkout, "status": "accepted"}
    assert client.post("/api/basket/items", json={"productId": product["id"]}).status_code == 200
    with sidecar_state(basket_stack) as state:
        saved = state.get(f"/{me}").json()
    assert saved["schemaVersion"] == 2
    assert saved["checkouts"] == [{"requestId": old_checkout, "status": "accepted"}]
    assert httpx.codes.is_success(client.get("/api/basket").status_code)


def test_a_stored_line_the_api_could_not_have_written_makes_the_basket_unreadable(
    basket_stack: Stack, as_user, products
):
    me, product = buyer(), products[0]
    line = {"productId": product["id"], "productName": "x", "unitPrice": 1, "quantity": -3}
    store_entry(basket_stack, me, {"schemaVersion": 2, "buyerId": me, "items": [line]})
    client = as_user(me)
    assert_problem(client.get("/api/basket"), 409)
    assert_problem(client.post("/api/basket/checkout", json={"shipping": SHIPPING}), 409)


def test_a_basket_that_is_not_even_json_is_a_409_and_put_replaces_it(
    stack: Stack, as_user, products
):
    """Written with redis-cli, past the sidecar (the Redis stack only: through the state API
    every value is JSON)."""
    me = buyer()
    assert stack.redis_url is not None
    redis.Redis.from_url(stack.redis_url).hset(
        f"basket-api||{me}", mapping={"data": "not json {", "version": 1}
    )
    client = httpx.Client(
        base_url=stack.url("basket-api"), timeout=20,
        headers={"Authorization": f"Bearer {mint_token(DEMO_JWT_SECRET, me)}"},
    )  # fmt: skip
    with client:
        assert_problem(client.get("/api/basket"), 409)
        assert_problem(client.post("/api/basket/items", json={"productId": 1}), 409)
        body = {"items": [{"productId": products[0]["id"], "quantity": 1}]}
        assert client.put("/api/basket", json=body).status_code == 200


def test_an_unreadable_price_entry_is_taken_as_none(basket_stack: Stack, as_user):
    item = new_product(basket_stack, price=7.0)
    client = as_user(buyer())
    client.post("/api/basket/items", json={"productId": item["id"]})
    store_entry(basket_stack, f"product-price:{item['id']}", {"price": "x"})
    (line,) = client.get("/api/basket").json()["items"]
    assert line["unitPrice"] == 7.0
