"""A shopper's journey through both services, over HTTP only."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from devstack.testkit import quantities, unique_user

WRITABLE = (
    "name", "description", "price", "pictureFileName", "catalogBrandId", "catalogTypeId",
    "availableStock", "restockThreshold", "maxStockThreshold",
)  # fmt: skip


def test_a_shopper_browses_filters_and_searches_the_catalog(target):
    catalog = httpx.Client(base_url=target.catalog_url)
    first = catalog.get("/api/catalog/items", params={"pageIndex": 0, "pageSize": 10}).json()
    assert first["count"] >= 50
    assert len(first["items"]) == 10
    second = catalog.get("/api/catalog/items", params={"pageIndex": 1, "pageSize": 10}).json()
    assert {i["id"] for i in first["items"]}.isdisjoint({i["id"] for i in second["items"]})

    brand = catalog.get("/api/catalog/brands").json()[0]
    by_brand = catalog.get("/api/catalog/items", params={"brandId": brand["id"]}).json()
    assert by_brand["count"] > 0
    assert {i["catalogBrandId"] for i in by_brand["items"]} == {brand["id"]}

    kind = catalog.get("/api/catalog/types").json()[0]
    by_type = catalog.get("/api/catalog/items", params={"typeId": kind["id"]}).json()
    assert {i["catalogTypeId"] for i in by_type["items"]} == {kind["id"]}

    found = catalog.get("/api/catalog/items", params={"q": "tent"}).json()
    assert found["count"] > 0
    for item in found["items"]:
        assert "tent" in (item["name"] + " " + item["description"]).lower()

    picture = catalog.get(first["items"][0]["pictureUrl"])
    assert picture.status_code == 200
    assert picture.headers["content-type"].startswith("image/")


def test_a_shopper_fills_changes_and_empties_a_basket(target):
    products = httpx.get(f"{target.catalog_url}/api/catalog/items").json()["items"]
    a, b, c = (p["id"] for p in products[:3])
    shopper = target.client(unique_user())

    assert shopper.get("/api/basket").json()["items"] == []
    shopper.post("/api/basket/items", json={"productId": a, "quantity": 1}).raise_for_status()
    shopper.post("/api/basket/items", json={"productId": b, "quantity": 2}).raise_for_status()
    shopper.post("/api/basket/items", json={"productId": c}).raise_for_status()
    shopper.patch(f"/api/basket/items/{a}", json={"quantity": 4}).raise_for_status()
    shopper.delete(f"/api/basket/items/{c}").raise_for_status()
    basket = shopper.get("/api/basket").json()
    assert quantities(basket) == {a: 4, b: 2}
    names = {i["productId"]: i["productName"] for i in basket["items"]}
    assert names == {p["id"]: p["name"] for p in products[:2]}

    assert shopper.delete("/api/basket").status_code == 204
    assert shopper.get("/api/basket").json()["items"] == []


def test_two_shoppers_at_once_each_see_only_their_own_basket(target):
    products = httpx.get(f"{target.catalog_url}/api/catalog/items").json()["items"]
    users = {unique_user("alice"): products[0]["id"], unique_user("bob"): products[1]["id"]}

    async def shop(user: str, product_id: int) -> dict:
        client = target.client(user)
        async with httpx.AsyncClient(base_url=target.basket_url, headers=client.headers) as http:
            for _ in range(5):
                r = await http.post("/api/basket/items", json={"productId": product_id})
                r.raise_for_status()
            return (await http.get("/api/basket")).json()

    async def both() -> list[dict]:
        return await asyncio.gather(*(shop(u, p) for u, p in users.items()))

    for basket in asyncio.run(both()):
        assert quantities(basket) == {users[basket["buyerId"]]: 5}


def test_an_admin_price_change_shows_as_old_and_new_price_in_the_basket(target):
    admin = target.client("admin", admin=True, service="catalog")
    brand = httpx.get(f"{target.catalog_url}/api/catalog/brands").json()[0]
    kind = httpx.get(f"{target.catalog_url}/api/catalog/types").json()[0]
    created = admin.post(
        "/api/catalog/items",
        json={
            "name": f"E2E lantern {uuid.uuid4().hex[:8]}",
            "description": "made by the end-to-end tests",
            "price": 20.00,
            "catalogBrandId": brand["id"],
            "catalogTypeId": kind["id"],
            "availableStock": 10,
        },
    )
    assert created.status_code == 201, created.text
    item = created.json()
    shopper = target.client(unique_user())
    shopper.post("/api/basket/items", json={"productId": item["id"]}).raise_for_status()

    writable = {k: item[k] for k in WRITABLE}
    changed = admin.put(
        f"/api/catalog/items/{item['id']}",
        json={**writable, "price": 25.50},
        headers={"If-Match": created.headers["etag"]},
    )
    assert changed.status_code == 200, changed.text
    assert httpx.get(f"{target.catalog_url}/api/catalog/items/{item['id']}").json()["price"] == 25.5

    shopper.post("/api/basket/items", json={"productId": item["id"]}).raise_for_status()
    (line,) = shopper.get("/api/basket").json()["items"]
    assert (line["unitPrice"], line["oldUnitPrice"], line["quantity"]) == (25.5, 20.0, 2)

    shopper_token_is_not_admin = target.client(unique_user(), service="catalog")
    assert (
        shopper_token_is_not_admin.put(
            f"/api/catalog/items/{item['id']}", json={**writable, "price": 1}
        ).status_code
        == 403
    )


def test_restarting_the_basket_service_and_its_sidecar_mid_journey_keeps_the_basket(target):
    products = httpx.get(f"{target.catalog_url}/api/catalog/items").json()["items"]
    shopper = target.client(unique_user())
    shopper.post("/api/basket/items", json={"productId": products[0]["id"], "quantity": 2})
    before = shopper.get("/api/basket").json()

    target.restart_basket()

    assert shopper.get("/api/basket").json() == before
    shopper.post("/api/basket/items", json={"productId": products[1]["id"]}).raise_for_status()
    assert quantities(shopper.get("/api/basket").json()) == {
        products[0]["id"]: 2,
        products[1]["id"]: 1,
    }
