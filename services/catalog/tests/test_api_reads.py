"""Reading the catalog over HTTP: lists, filters, search, lookups, brands, types and pictures."""

from decimal import Decimal

import pytest

ITEM_FIELDS = {
    "id",
    "name",
    "description",
    "price",
    "pictureFileName",
    "pictureUrl",
    "catalogBrandId",
    "catalogBrand",
    "catalogTypeId",
    "catalogType",
    "availableStock",
    "restockThreshold",
    "maxStockThreshold",
    "priceVersion",
    "version",
}


def test_list_returns_the_first_page_of_the_seeded_catalog_by_default(api):
    page = api.list_items()
    assert page["pageIndex"] == 0
    assert page["pageSize"] == 10
    assert page["count"] >= 50
    assert len(page["items"]) == 10
    assert set(page["items"][0]) == ITEM_FIELDS
    names = [item["name"] for item in page["items"]]
    assert names == sorted(names)


def test_item_json_carries_brand_and_type_names_price_as_number_and_picture_url(api):
    item = api.list_items(q="Ridgeline Dome")["items"][0]
    assert item["name"] == "Ridgeline Dome 2 Tent"
    assert item["price"] == 249.0
    assert isinstance(item["price"], float)
    assert item["catalogBrand"] == "Ridgeline"
    assert item["catalogType"] == "Tents"
    assert item["pictureFileName"] == "ridgeline-dome-2-tent.svg"
    assert item["pictureUrl"] == f"/api/catalog/items/{item['id']}/picture"


def test_price_keeps_its_cents_on_the_wire(api):
    created = api.create_item(price="19.99")
    assert created["price"] == 19.99
    assert Decimal(str(api.get_item(created["id"])["price"])) == Decimal("19.99")


def test_pages_walk_through_all_matching_items_without_overlap(api, new_name):
    token = "zq" + new_name("").strip().replace(" ", "")
    names = sorted(api.create_item(name=f"Paging {token} {i}")["name"] for i in range(5))
    pages = [api.list_items(q=token, pageSize=2, pageIndex=i) for i in range(4)]
    assert [p["count"] for p in pages] == [5, 5, 5, 5]
    assert [len(p["items"]) for p in pages] == [2, 2, 1, 0]
    assert [item["name"] for p in pages for item in p["items"]] == names


def test_brand_filter_returns_only_that_brands_items(api):
    brands = api.client.get("/api/catalog/brands").json()
    brand = next(b for b in brands if b["name"] == "Summit Forge")
    page = api.list_items(brandId=brand["id"], pageSize=100)
    assert page["count"] == len(page["items"]) >= 5
    assert {item["catalogBrand"] for item in page["items"]} == {"Summit Forge"}


def test_type_filter_returns_only_that_types_items(api):
    types = api.client.get("/api/catalog/types").json()
    tents = next(t for t in types if t["name"] == "Tents")
    page = api.list_items(typeId=tents["id"], pageSize=100)
    assert page["count"] >= 8
    assert {item["catalogType"] for item in page["items"]} == {"Tents"}


def test_brand_and_type_filters_combine(api, new_name):
    token = "zq" + new_name("").strip()
    wanted = api.create_item(name=f"Combo {token} a", catalogBrandId=2, catalogTypeId=3)
    api.create_item(name=f"Combo {token} b", catalogBrandId=2, catalogTypeId=4)
    api.create_item(name=f"Combo {token} c", catalogBrandId=3, catalogTypeId=3)
    page = api.list_items(q=token, brandId=2, typeId=3)
    assert [item["id"] for item in page["items"]] == [wanted["id"]]
    assert page["count"] == 1


def test_filter_by_an_unknown_brand_is_an_empty_page_not_an_error(api):
    page = api.list_items(brandId=2_000_000_000)
    assert page == {"pageIndex": 0, "pageSize": 10, "count": 0, "items": []}


def test_search_matches_words_in_name_and_description_with_stemming(api):
    in_name = api.list_items(q="tents", pageSize=100)
    assert in_name["count"] >= 5
    assert all("tent" in item["name"].lower() for item in in_name["items"][:3])
    in_description = api.list_items(q="crampon")
    assert [item["name"] for item in in_description["items"]] == [
        "Summit Forge Mountaineering Boot"
    ]


def test_search_ranks_name_matches_above_description_matches(api, new_name):
    token = "zq" + new_name("").strip()
    in_description = api.create_item(name=f"Aaa {new_name()}", description=f"about {token}")
    in_name = api.create_item(name=f"Zzz {token}")
    page = api.list_items(q=token)
    assert [item["id"] for item in page["items"]] == [in_name["id"], in_description["id"]]


@pytest.mark.parametrize("q", ['"unbalanced', "tent & | !", "-", "or or", "()", "%_\\", "' OR 1=1"])
def test_search_accepts_any_punctuation_without_error(api, q):
    page = api.list_items(q=q)
    assert page["count"] >= 0


def test_blank_search_text_means_no_search(api):
    assert api.list_items(q="   ")["count"] == api.list_items()["count"]


def test_read_item_returns_the_item(api):
    created = api.create_item(description="One of a kind.")
    item = api.get_item(created["id"])
    assert item == created
    assert item["description"] == "One of a kind."


def test_read_unknown_item_is_a_404_problem(api, assert_problem):
    response = api.client.get("/api/catalog/items/2000000000")
    body = assert_problem(response, 404)
    assert "2000000000" in body["detail"]


def test_by_ids_returns_the_existing_items_in_the_order_asked(api):
    a, b, c = (api.create_item() for _ in range(3))
    ids = f"{c['id']},{a['id']},2000000000,{b['id']},{a['id']}"
    response = api.client.get("/api/catalog/items/by-ids", params={"ids": ids})
    assert response.status_code == 200
    assert [item["id"] for item in response.json()] == [c["id"], a["id"], b["id"]]
    assert response.json()[0] == c


def test_by_ids_also_accepts_repeated_parameters(api):
    a, b = api.create_item(), api.create_item()
    response = api.client.get(f"/api/catalog/items/by-ids?ids={a['id']}&ids={b['id']}")
    assert [item["id"] for item in response.json()] == [a["id"], b["id"]]


def test_by_ids_accepts_one_hundred_ids(api):
    ids = ",".join(str(i) for i in range(1, 101))
    response = api.client.get("/api/catalog/items/by-ids", params={"ids": ids})
    assert response.status_code == 200
    assert len(response.json()) >= 50


def test_brands_are_listed_by_name(api):
    response = api.client.get("/api/catalog/brands")
    assert response.status_code == 200
    brands = response.json()
    assert len(brands) >= 5
    assert set(brands[0]) == {"id", "name"}
    assert [b["name"] for b in brands] == sorted(b["name"] for b in brands)


def test_types_are_listed_by_name(api):
    response = api.client.get("/api/catalog/types")
    assert response.status_code == 200
    types = response.json()
    assert len(types) >= 5
    assert [t["name"] for t in types] == sorted(t["name"] for t in types)


def test_picture_is_served_as_svg_with_cache_validators(api):
    item = api.list_items(q="Ridgeline Dome")["items"][0]
    response = api.client.get(item["pictureUrl"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"
    assert response.content.startswith(b"<svg")
    assert "max-age=" in response.headers["cache-control"]
    assert response.headers["etag"].startswith('"')
    assert response.headers["last-modified"].endswith("GMT")
    assert response.headers["x-content-type-options"] == "nosniff"


def test_picture_is_not_sent_again_when_the_etag_matches(api):
    url = api.list_items()["items"][0]["pictureUrl"]
    etag = api.client.get(url).headers["etag"]
    again = api.client.get(url, headers={"If-None-Match": f'W/"other", {etag}'})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    changed = api.client.get(url, headers={"If-None-Match": '"something-else"'})
    assert changed.status_code == 200


def test_picture_is_not_sent_again_when_not_modified_since(api):
    url = api.list_items()["items"][0]["pictureUrl"]
    last_modified = api.client.get(url).headers["last-modified"]
    again = api.client.get(url, headers={"If-Modified-Since": last_modified})
    assert again.status_code == 304


def test_picture_of_an_unknown_item_is_a_404_problem(api, assert_problem):
    assert_problem(api.client.get("/api/catalog/items/2000000000/picture"), 404)


def test_picture_of_an_item_without_one_is_a_404_problem(api, assert_problem):
    item = api.create_item(pictureFileName=None)
    assert item["pictureUrl"] is None
    body = assert_problem(api.client.get(f"/api/catalog/items/{item['id']}/picture"), 404)
    assert "no picture" in body["detail"]


def test_health_and_readiness_answer(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_openapi_describes_the_catalog_routes(client):
    spec = client.get("/openapi.json").json()
    assert "/api/catalog/items/by-ids" in spec["paths"]
    assert spec["paths"]["/api/catalog/items"]["get"]["summary"] == "Read Items"
