"""Conditional requests on every basket write (RFC 9110 §13) and ETags that never repeat, on both
stores, through the real service, sidecar and store."""

from __future__ import annotations

import httpx
import pytest

from devstack.stack import DEMO_DAPR_API_TOKEN, Stack
from devstack.testkit import SHIPPING, assert_problem, quantities
from devstack.testkit import unique_user as buyer


def writes(pid: int) -> list[tuple[str, str, dict | None]]:
    """Every basket write, as (method, path, body), for a basket that holds `pid`."""
    return [
        ("PUT", "/api/basket", {"items": [{"productId": pid, "quantity": 3}]}),
        ("DELETE", "/api/basket", None),
        ("POST", "/api/basket/items", {"productId": pid}),
        ("PATCH", f"/api/basket/items/{pid}", {"quantity": 5}),
        ("DELETE", f"/api/basket/items/{pid}", None),
        ("POST", "/api/basket/checkout", {"shipping": SHIPPING}),
    ]


WRITE_IDS = ["put", "delete", "add", "patch", "remove", "checkout"]


@pytest.mark.parametrize("write", range(6), ids=WRITE_IDS)
def test_every_write_with_a_stale_if_match_is_a_412_and_changes_nothing(as_user, products, write):
    """RFC 9110 §13.1.1: the server MUST NOT perform the method when If-Match is false."""
    client = as_user(buyer())
    pid = products[0]["id"]
    stale = client.post("/api/basket/items", json={"productId": pid}).headers["etag"]
    current = client.post("/api/basket/items", json={"productId": pid}).headers["etag"]
    method, path, body = writes(pid)[write]

    assert_problem(client.request(method, path, json=body, headers={"If-Match": stale}), 412)
    after = client.get("/api/basket")
    assert after.headers["etag"] == current
    assert quantities(after.json()) == {pid: 2}


@pytest.mark.parametrize("write", range(6), ids=WRITE_IDS)
def test_every_write_with_the_current_etag_in_a_list_goes_ahead(as_user, products, write):
    """§13.1.1: true when any member of the list matches by strong comparison."""
    client = as_user(buyer())
    pid = products[0]["id"]
    etag = client.post("/api/basket/items", json={"productId": pid}).headers["etag"]
    method, path, body = writes(pid)[write]
    resp = client.request(method, path, json=body, headers={"If-Match": f'"other", {etag}'})
    assert resp.status_code in (200, 202, 204), resp.text


@pytest.mark.parametrize("if_match", ['"7"', "*", '"7", "8"'])
def test_if_match_on_a_basket_that_does_not_exist_is_a_412_and_creates_nothing(
    as_user, products, if_match
):
    """§13.1.1: with no current representation, `*` and every list are false."""
    client = as_user(buyer())
    body = {"items": [{"productId": products[0]["id"]}]}
    assert_problem(client.put("/api/basket", json=body, headers={"If-Match": if_match}), 412)
    resp = client.get("/api/basket")
    assert resp.json()["items"] == []
    assert "etag" not in resp.headers


def test_if_none_match_star_creates_only(as_user, products):
    """§13.1.2: `If-None-Match: *` is false when a representation exists."""
    client = as_user(buyer())
    body = {"items": [{"productId": products[0]["id"]}]}
    created = client.put("/api/basket", json=body, headers={"If-None-Match": "*"})
    assert created.status_code == 200, created.text
    again = client.put("/api/basket", json={"items": []}, headers={"If-None-Match": "*"})
    assert_problem(again, 412)
    assert client.get("/api/basket").json()["items"] == created.json()["items"]


@pytest.mark.parametrize("if_match", ['"0"', '""', 'W/"{etag}"', '"{etag}x"'])
def test_a_tag_that_is_not_the_current_strong_tag_is_a_412(as_user, products, if_match):
    """§8.8.3.2 strong comparison: a weak tag never matches, nor does any other opaque-tag."""
    client = as_user(buyer())
    etag = client.post("/api/basket/items", json={"productId": products[0]["id"]}).headers["etag"]
    header = if_match.format(etag=etag.strip('"'))
    assert_problem(client.delete("/api/basket", headers={"If-Match": header}), 412)
    assert client.get("/api/basket").json()["items"]


@pytest.mark.parametrize("header", ["If-Match", "If-None-Match"])
@pytest.mark.parametrize("value", ["0", "abc", '"a" "b"', '*, "a"', '"unterminated'])
def test_a_malformed_condition_is_a_400_and_changes_nothing(as_user, products, header, value):
    """§13.1.1 / §13.1.2 grammar: "*" or a list of quoted entity tags; anything else is 400."""
    client = as_user(buyer())
    client.post("/api/basket/items", json={"productId": products[0]["id"]})
    assert_problem(client.delete("/api/basket", headers={header: value}), 400, header)
    assert client.get("/api/basket").json()["items"]


def test_every_response_with_a_representation_carries_its_etag(as_user, products):
    """§8.8.3: the ETag a write answers with is the one the next read shows."""
    client = as_user(buyer())
    a, b = products[0]["id"], products[1]["id"]
    for method, path, body in [
        ("PUT", "/api/basket", {"items": [{"productId": a}]}),
        ("POST", "/api/basket/items", {"productId": b}),
        ("PATCH", f"/api/basket/items/{a}", {"quantity": 4}),
        ("DELETE", f"/api/basket/items/{b}", None),
        ("DELETE", "/api/basket", None),
    ]:
        resp = client.request(method, path, json=body)
        assert resp.status_code in (200, 204), resp.text
        assert resp.headers["etag"] == client.get("/api/basket").headers["etag"]


def test_a_get_with_the_current_etag_in_if_none_match_is_a_304(as_user, products):
    """§13.1.2: for GET, a false If-None-Match is 304 Not Modified."""
    client = as_user(buyer())
    etag = client.post("/api/basket/items", json={"productId": products[0]["id"]}).headers["etag"]
    resp = client.get("/api/basket", headers={"If-None-Match": etag})
    assert resp.status_code == 304
    assert resp.headers["etag"] == etag
    assert client.get("/api/basket", headers={"If-None-Match": '"old"'}).status_code == 200


def test_etags_never_repeat_after_a_delete_or_a_checkout(as_user, products):
    """The ABA of the review: PUT, DELETE, another tab adds; the first ETag must not match."""
    client = as_user(buyer())
    pid = products[0]["id"]
    seen = [client.put("/api/basket", json={"items": [{"productId": pid}]}).headers["etag"]]
    seen.append(client.delete("/api/basket").headers["etag"])
    seen.append(client.post("/api/basket/items", json={"productId": pid}).headers["etag"])
    assert client.post("/api/basket/checkout", json={"shipping": SHIPPING}).status_code == 202
    seen.append(client.get("/api/basket").headers["etag"])
    seen.append(client.post("/api/basket/items", json={"productId": pid}).headers["etag"])
    assert len(set(seen)) == len(seen)

    stale = client.put("/api/basket", json={"items": []}, headers={"If-Match": seen[0]})
    assert_problem(stale, 412)
    assert quantities(client.get("/api/basket").json()) == {pid: 1}


def test_the_control_a_deleted_redis_key_starts_its_version_again(stack: Stack):
    """Why the service never deletes a basket and why its ETag is not the store's version: on
    Redis, a key saved, deleted and saved again has the same version as before, so a save
    under the old ETag would go through (ABA). Redis only: the PostgreSQL store draws a random
    UUID for every version."""
    key = buyer("control")
    headers = {"dapr-api-token": DEMO_DAPR_API_TOKEN}
    with httpx.Client(base_url=stack.dapr_url("basket-api"), headers=headers) as dapr:

        def save(value: str) -> str:
            dapr.post("/v1.0/state/statestore", json=[{"key": key, "value": value}])
            return dapr.get(f"/v1.0/state/statestore/{key}").headers["etag"]

        first = save("a")
        dapr.delete(f"/v1.0/state/statestore/{key}").raise_for_status()
        assert save("b") == first
        stale = dapr.post(
            "/v1.0/state/statestore",
            json=[{"key": key, "value": "c", "etag": first,
                   "options": {"concurrency": "first-write"}}],
        )  # fmt: skip
        assert stale.status_code == 204, "the stale ETag matched the new value"
