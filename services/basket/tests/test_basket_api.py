"""The basket API through HTTP, against a real basket process, daprd sidecar and state store."""

from __future__ import annotations

from datetime import timedelta

import httpx
import jwt
import pytest

from devstack.testkit import PROBLEM_JSON, assert_problem, quantities
from devstack.testkit import unique_user as buyer
from eshop_common.auth import mint_token


def test_a_new_buyer_gets_an_empty_basket_not_a_404(as_user):
    me = buyer()
    resp = as_user(me).get("/api/basket")
    assert resp.status_code == 200
    assert resp.json() == {"buyerId": me, "items": []}
    assert "etag" not in resp.headers


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/basket", None),
        ("PUT", "/api/basket", {"items": []}),
        ("DELETE", "/api/basket", None),
        ("POST", "/api/basket/items", {"productId": 1, "quantity": 1}),
        ("PATCH", "/api/basket/items/1", {"quantity": 2}),
        ("DELETE", "/api/basket/items/1", None),
    ],
)
def test_every_endpoint_needs_a_valid_token(basket_url, method, path, body):
    forged = jwt.encode({"sub": "alice", "iss": "eshop-demo", "exp": 9999999999}, "x" * 40)
    expired = mint_token(
        "eshop-demo-jwt-secret-change-me-in-production", "alice", ttl=timedelta(minutes=-5)
    )
    for headers in (
        {},
        {"Authorization": f"Bearer {forged}"},
        {"Authorization": f"Bearer {expired}"},
    ):
        resp = httpx.request(method, basket_url + path, json=body, headers=headers)
        assert_problem(resp, 401)
        assert resp.headers["www-authenticate"] == "Bearer"


def test_adding_an_item_takes_name_and_price_from_the_catalog_not_the_client(as_user, products):
    product = products[0]
    client = as_user(buyer())
    resp = client.post(
        "/api/basket/items",
        json={"productId": product["id"], "quantity": 2, "unitPrice": 0.01, "productName": "free"},
    )
    assert resp.status_code == 200, resp.text
    (line,) = resp.json()["items"]
    assert line["productName"] == product["name"]
    assert line["unitPrice"] == pytest.approx(float(product["price"]))
    assert line["quantity"] == 2
    assert "oldUnitPrice" not in line
    assert client.get("/api/basket").json()["items"] == [line]


def test_adding_the_same_product_again_adds_to_its_quantity(as_user, products):
    client = as_user(buyer())
    pid = products[1]["id"]
    client.post("/api/basket/items", json={"productId": pid, "quantity": 3})
    resp = client.post("/api/basket/items", json={"productId": pid, "quantity": 4})
    assert quantities(resp.json()) == {pid: 7}


@pytest.mark.parametrize("quantity", [0, -1, 100, "many", None])
def test_a_quantity_outside_1_to_99_is_a_422_naming_the_field(as_user, products, quantity):
    resp = as_user(buyer()).post(
        "/api/basket/items", json={"productId": products[0]["id"], "quantity": quantity}
    )
    assert_problem(resp, 422, "quantity")


def test_adding_past_99_of_one_product_is_a_422(as_user, products):
    client = as_user(buyer())
    pid = products[0]["id"]
    client.post("/api/basket/items", json={"productId": pid, "quantity": 60})
    resp = client.post("/api/basket/items", json={"productId": pid, "quantity": 40})
    assert_problem(resp, 422, "quantity")
    assert quantities(client.get("/api/basket").json()) == {pid: 60}


def test_an_unknown_product_is_a_400_naming_product_id(as_user):
    resp = as_user(buyer()).post("/api/basket/items", json={"productId": 999999, "quantity": 1})
    assert_problem(resp, 400, "productId")


@pytest.mark.parametrize("body", ["not json", "[]", '{"productId": "x"}', "{}"])
def test_a_malformed_body_is_a_client_error_not_a_500(as_user, body):
    resp = as_user(buyer()).post(
        "/api/basket/items", content=body, headers={"content-type": "application/json"}
    )
    assert resp.status_code in (400, 422), resp.text
    assert resp.headers["content-type"].startswith(PROBLEM_JSON)


def test_patch_sets_the_quantity_of_one_line(as_user, products):
    client = as_user(buyer())
    a, b = products[0]["id"], products[1]["id"]
    client.post("/api/basket/items", json={"productId": a, "quantity": 1})
    client.post("/api/basket/items", json={"productId": b, "quantity": 1})
    resp = client.patch(f"/api/basket/items/{a}", json={"quantity": 5})
    assert resp.status_code == 200, resp.text
    assert quantities(resp.json()) == {a: 5, b: 1}


def test_patch_or_delete_of_a_product_not_in_the_basket_is_a_404(as_user, products):
    client = as_user(buyer())
    pid = products[0]["id"]
    assert_problem(client.patch(f"/api/basket/items/{pid}", json={"quantity": 2}), 404)
    assert_problem(client.delete(f"/api/basket/items/{pid}"), 404)


@pytest.mark.parametrize("quantity", [0, 100])
def test_patch_with_an_out_of_range_quantity_is_a_422(as_user, products, quantity):
    client = as_user(buyer())
    pid = products[0]["id"]
    client.post("/api/basket/items", json={"productId": pid, "quantity": 1})
    assert_problem(client.patch(f"/api/basket/items/{pid}", json={"quantity": quantity}), 422)


def test_deleting_a_line_leaves_the_others(as_user, products):
    client = as_user(buyer())
    a, b = products[0]["id"], products[1]["id"]
    client.put("/api/basket", json={"items": [{"productId": a}, {"productId": b}]})
    resp = client.delete(f"/api/basket/items/{a}")
    assert resp.status_code == 200
    assert quantities(resp.json()) == {b: 1}


def test_deleting_the_basket_empties_it(as_user, products):
    client = as_user(buyer())
    client.post("/api/basket/items", json={"productId": products[0]["id"]})
    assert client.delete("/api/basket").status_code == 204
    assert client.get("/api/basket").json()["items"] == []


def test_put_replaces_the_whole_basket(as_user, products):
    client = as_user(buyer())
    a, b, c = (p["id"] for p in products[:3])
    client.put("/api/basket", json={"items": [{"productId": a, "quantity": 2}]})
    resp = client.put(
        "/api/basket",
        json={"items": [{"productId": b, "quantity": 3}, {"productId": c, "quantity": 1}]},
    )
    assert resp.status_code == 200, resp.text
    assert quantities(resp.json()) == {b: 3, c: 1}


def test_put_with_the_same_product_twice_is_a_422(as_user, products):
    pid = products[0]["id"]
    resp = as_user(buyer()).put(
        "/api/basket", json={"items": [{"productId": pid}, {"productId": pid}]}
    )
    assert_problem(resp, 422, "items")


def test_put_with_more_lines_than_allowed_is_a_422(as_user):
    items = [{"productId": i, "quantity": 1} for i in range(1, 52)]
    assert_problem(as_user(buyer()).put("/api/basket", json={"items": items}), 422, "items")


def test_every_write_changes_the_etag(as_user, products):
    client = as_user(buyer())
    client.post("/api/basket/items", json={"productId": products[0]["id"]})
    first = client.get("/api/basket").headers["etag"]
    client.post("/api/basket/items", json={"productId": products[0]["id"]})
    second = client.get("/api/basket").headers["etag"]
    assert first.startswith('"')
    assert first != second


def test_put_with_a_current_if_match_succeeds(as_user, products):
    client = as_user(buyer())
    client.post("/api/basket/items", json={"productId": products[0]["id"]})
    etag = client.get("/api/basket").headers["etag"]
    resp = client.put(
        "/api/basket",
        json={"items": [{"productId": products[1]["id"]}]},
        headers={"If-Match": etag},
    )
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("stale", ["old-etag", "garbage"])
def test_put_with_a_stale_if_match_is_a_412_and_changes_nothing(as_user, products, stale):
    client = as_user(buyer())
    client.post("/api/basket/items", json={"productId": products[0]["id"]})
    old = client.get("/api/basket").headers["etag"]
    client.post("/api/basket/items", json={"productId": products[0]["id"]})
    before = client.get("/api/basket").json()
    if_match = old if stale == "old-etag" else '"not-a-version"'
    resp = client.put(
        "/api/basket",
        json={"items": [{"productId": products[1]["id"]}]},
        headers={"If-Match": if_match},
    )
    assert_problem(resp, 412)
    assert client.get("/api/basket").json() == before


def test_delete_with_a_stale_if_match_is_a_412(as_user, products):
    client = as_user(buyer())
    client.post("/api/basket/items", json={"productId": products[0]["id"]})
    old = client.get("/api/basket").headers["etag"]
    client.post("/api/basket/items", json={"productId": products[0]["id"]})
    assert_problem(client.delete("/api/basket", headers={"If-Match": old}), 412)
    assert client.get("/api/basket").json()["items"]


def test_readiness_checks_the_sidecar(basket_url):
    assert httpx.get(f"{basket_url}/readyz").json() == {"status": "ready"}
    assert httpx.get(f"{basket_url}/healthz").json() == {"status": "ok"}


def test_no_buyer_id_ever_appears_in_a_url(basket_url):
    paths = httpx.get(f"{basket_url}/openapi.json").json()["paths"]
    assert set(paths) >= {"/api/basket", "/api/basket/items", "/api/basket/items/{productId}"}
    assert not [p for p in paths if "buyer" in p.lower() or "user" in p.lower()]


@pytest.mark.parametrize("suffix", ["?x=1", "#frag", "/../{victim}", "||x", ":price"])
def test_a_token_subject_that_would_address_another_key_is_refused(as_user, products, suffix):
    victim = buyer()
    as_user(victim).post("/api/basket/items", json={"productId": products[0]["id"]})
    attacker = as_user(f"{victim}{suffix}".replace("{victim}", victim))
    resp = attacker.get("/api/basket")
    assert_problem(resp, 400)
    assert victim not in resp.text
