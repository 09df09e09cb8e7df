"""Bad input never reaches the database as a 500: each case is a 4xx problem naming the field."""

import json

import pytest

LONG = "x" * 1001


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"pageSize": 0}, "pageSize"),
        ({"pageSize": 101}, "pageSize"),
        ({"pageSize": "ten"}, "pageSize"),
        ({"pageIndex": -1}, "pageIndex"),
        ({"pageIndex": 10**12}, "pageIndex"),
        ({"pageIndex": "1.5"}, "pageIndex"),
        ({"brandId": 0}, "brandId"),
        ({"brandId": "acme"}, "brandId"),
        ({"brandId": 2**31}, "brandId"),
        ({"typeId": -3}, "typeId"),
        ({"q": "tent\x00"}, "q"),
        ({"q": "t" * 101}, "q"),
    ],
)
def test_bad_list_parameters_are_422_problems_naming_the_parameter(
    client, assert_problem, params, field
):
    response = client.get("/api/catalog/items", params=params)
    body = assert_problem(response, 422, field)
    assert body["errors"][0]["in"] == "query"


@pytest.mark.parametrize(
    "ids",
    ["", "1,,2", "1,two", "1;2", "0", "-4", str(2**31), "1.5", ",".join(["1"] * 101)],
)
def test_malformed_or_too_many_ids_are_422_problems_naming_ids(client, assert_problem, ids):
    response = client.get("/api/catalog/items/by-ids", params={"ids": ids})
    assert_problem(response, 422, "ids")


def test_by_ids_without_ids_is_a_422_problem(client, assert_problem):
    assert_problem(client.get("/api/catalog/items/by-ids"), 422, "ids")


@pytest.mark.parametrize("item_id", ["0", str(2**31), "99999999999999999999"])
@pytest.mark.parametrize("suffix", ["", "/picture"])
def test_item_ids_out_of_range_in_the_path_are_422_problems(
    client, assert_problem, item_id, suffix
):
    response = client.get(f"/api/catalog/items/{item_id}{suffix}")
    assert_problem(response, 422, "item_id")


@pytest.mark.parametrize("item_id", ["abc", "-1", "1.5", "%201"])
@pytest.mark.parametrize("suffix", ["", "/picture"])
def test_a_path_segment_that_is_not_digits_names_no_item(client, assert_problem, item_id, suffix):
    assert_problem(client.get(f"/api/catalog/items/{item_id}{suffix}"), 404)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "POST"])
def test_other_methods_on_by_ids_are_405_naming_get(client, assert_problem, method):
    """RFC 9110 §15.5.6: a 405 lists the methods the resource does support in `Allow`."""
    response = client.request(method, "/api/catalog/items/by-ids")
    assert_problem(response, 405)
    assert response.headers["allow"] == "GET"


def test_405_names_every_method_of_the_path(client, assert_problem):
    response = client.request("POST", "/api/catalog/items/1")
    assert_problem(response, 405)
    assert response.headers["allow"] == "GET, PUT, PATCH, DELETE"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"price": -0.01}, "price"),
        ({"price": "-1"}, "price"),
        ({"price": 1.234}, "price"),
        ({"price": 123456789.0}, "price"),
        ({"price": "NaN"}, "price"),
        ({"price": "Infinity"}, "price"),
        ({"price": "cheap"}, "price"),
        ({"price": None}, "price"),
        ({"availableStock": -1}, "availableStock"),
        ({"availableStock": 2**31}, "availableStock"),
        ({"restockThreshold": -1}, "restockThreshold"),
        ({"maxStockThreshold": -1}, "maxStockThreshold"),
        ({"availableStock": 1.5}, "availableStock"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "n" * 101}, "name"),
        ({"name": "nul\x00name"}, "name"),
        ({"name": 42}, "name"),
        ({"description": LONG}, "description"),
        ({"description": "nul \x00 inside"}, "description"),
        ({"pictureFileName": "../../etc/passwd"}, "pictureFileName"),
        ({"pictureFileName": "picture.exe"}, "pictureFileName"),
        ({"pictureFileName": "p" * 100 + ".svg"}, "pictureFileName"),
        ({"catalogBrandId": 0}, "catalogBrandId"),
        ({"catalogBrandId": 2**31}, "catalogBrandId"),
        ({"catalogTypeId": "one"}, "catalogTypeId"),
        ({"unexpected": True}, "unexpected"),
    ],
)
@pytest.mark.parametrize("method", ["post", "put", "patch"])
def test_bad_item_bodies_are_422_problems_naming_the_field(
    api, assert_problem, method, overrides, field
):
    target = "/api/catalog/items" if method == "post" else "/api/catalog/items/1"
    headers = dict(api.admin_headers)
    if method != "post":
        headers["If-Match"] = "*"  # the body is refused before any version is looked at
    patch = method == "patch"
    headers["Content-Type"] = "application/merge-patch+json" if patch else "application/json"
    response = api.client.request(
        method, target, content=json.dumps(api.new_item(**overrides)), headers=headers
    )
    body = assert_problem(response, 422, field)
    assert body["errors"][0]["in"] == "body"


def test_a_lone_surrogate_in_a_body_string_is_a_422_problem(api, assert_problem):
    raw = api.client.post(
        "/api/catalog/items",
        content=b'{"name": "bad \\ud800", "price": 1, "catalogBrandId": 1, "catalogTypeId": 1}',
        headers={**api.admin_headers, "Content-Type": "application/json"},
    )
    assert_problem(raw, 422, "name")


@pytest.mark.parametrize("missing", ["name", "price", "catalogBrandId", "catalogTypeId"])
def test_missing_required_fields_are_422_problems_naming_them(api, assert_problem, missing):
    body = api.new_item()
    del body[missing]
    response = api.client.post("/api/catalog/items", json=body, headers=api.admin_headers)
    assert_problem(response, 422, missing)


def test_a_body_that_is_not_json_is_a_400_problem(api, assert_problem):
    response = api.client.post(
        "/api/catalog/items",
        content=b'{"name": "half',
        headers={**api.admin_headers, "Content-Type": "application/json"},
    )
    assert_problem(response, 400)


def test_a_body_that_is_not_an_object_is_a_422_problem(api, assert_problem):
    response = api.client.post("/api/catalog/items", json=[1, 2], headers=api.admin_headers)
    assert_problem(response, 422)


def test_bad_input_leaves_nothing_behind(api, db, new_name):
    from sqlalchemy import text

    name = new_name()
    api.client.post(
        "/api/catalog/items", json=api.new_item(name=name, price=-5), headers=api.admin_headers
    )
    api.client.post(
        "/api/catalog/items",
        json=api.new_item(name=name, catalogBrandId=999_999),
        headers=api.admin_headers,
    )
    with db.connect() as conn:
        found = conn.execute(text("SELECT count(*) FROM catalog_item WHERE name = :n"), {"n": name})
        assert found.scalar_one() == 0
