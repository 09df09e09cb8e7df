"""Changing the catalog over HTTP: admins create, replace and delete items; nobody else can."""

import pytest


def test_admin_creates_an_item_and_gets_its_location(api):
    body = api.new_item(price=99.95, availableStock=3)
    response = api.client.post("/api/catalog/items", json=body, headers=api.admin_headers)
    assert response.status_code == 201
    created = response.json()
    assert response.headers["location"] == f"/api/catalog/items/{created['id']}"
    assert created["name"] == body["name"]
    assert created["price"] == 99.95
    assert created["availableStock"] == 3
    assert created["catalogBrand"]
    assert api.get_item(created["id"]) == created


def test_created_item_name_is_trimmed(api, new_name):
    name = new_name()
    assert api.create_item(name=f"  {name}  ")["name"] == name


def test_price_is_accepted_as_a_numeric_string(api):
    assert api.create_item(price="0.10")["price"] == 0.1


def test_admin_replaces_an_item(api):
    created = api.create_item()
    replacement = api.new_item(price=1.25, catalogBrandId=2, catalogTypeId=3, pictureFileName=None)
    response = api.client.put(
        f"/api/catalog/items/{created['id']}", json=replacement, headers=api.at_version(created)
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["id"] == created["id"]
    assert updated["name"] == replacement["name"]
    assert updated["price"] == 1.25
    assert (updated["catalogBrandId"], updated["catalogTypeId"]) == (2, 3)
    assert updated["pictureUrl"] is None
    assert api.get_item(created["id"]) == updated


def test_replacing_an_item_moves_its_updated_at_but_not_created_at(api, db):
    from sqlalchemy import text

    created = api.create_item()
    query = text("SELECT created_at, updated_at FROM catalog_item WHERE id = :id")
    with db.connect() as conn:
        before = conn.execute(query, {"id": created["id"]}).one()
    api.client.put(
        f"/api/catalog/items/{created['id']}",
        json=api.new_item(name=created["name"], price=77),
        headers=api.at_version(created),
    )
    with db.connect() as conn:
        after = conn.execute(query, {"id": created["id"]}).one()
    assert after.created_at == before.created_at
    assert after.updated_at > before.updated_at


def test_replacing_an_item_may_keep_its_own_name(api):
    created = api.create_item()
    response = api.client.put(
        f"/api/catalog/items/{created['id']}",
        json=api.new_item(name=created["name"], price=3),
        headers=api.at_version(created),
    )
    assert response.status_code == 200
    assert response.json()["price"] == 3


def test_admin_deletes_an_item_and_it_is_gone(api, assert_problem):
    created = api.create_item()
    url = f"/api/catalog/items/{created['id']}"
    response = api.client.delete(url, headers=api.admin_headers)
    assert response.status_code == 204
    assert response.content == b""
    assert_problem(api.client.get(url), 404)
    assert_problem(api.client.delete(url, headers=api.admin_headers), 404)


def test_replacing_an_unknown_item_is_a_404_problem(api, assert_problem):
    response = api.client.put(
        "/api/catalog/items/2000000000",
        json=api.new_item(),
        headers={**api.admin_headers, "If-Match": '"1"'},
    )
    assert_problem(response, 404)


def test_creating_a_duplicate_name_is_a_409_problem_naming_the_field(api, assert_problem):
    created = api.create_item()
    response = api.client.post(
        "/api/catalog/items", json=api.new_item(name=created["name"]), headers=api.admin_headers
    )
    assert_problem(response, 409, "name")


def test_renaming_to_a_taken_name_is_a_409_problem(api, assert_problem):
    first, second = api.create_item(), api.create_item()
    response = api.client.put(
        f"/api/catalog/items/{second['id']}",
        json=api.new_item(name=first["name"]),
        headers=api.at_version(second),
    )
    assert_problem(response, 409, "name")
    assert api.get_item(second["id"])["name"] == second["name"]


@pytest.mark.parametrize("field", ["catalogBrandId", "catalogTypeId"])
def test_unknown_brand_or_type_is_a_422_problem_naming_the_field(api, assert_problem, field):
    response = api.client.post(
        "/api/catalog/items", json=api.new_item(**{field: 999_999}), headers=api.admin_headers
    )
    body = assert_problem(response, 422, field)
    assert "999999" in body["detail"]


def test_unknown_picture_is_a_422_problem_naming_the_field(api, assert_problem):
    response = api.client.post(
        "/api/catalog/items",
        json=api.new_item(pictureFileName="not-shipped.svg"),
        headers=api.admin_headers,
    )
    assert_problem(response, 422, "pictureFileName")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/catalog/items"),
        ("put", "/api/catalog/items/1"),
        ("patch", "/api/catalog/items/1"),
        ("delete", "/api/catalog/items/1"),
    ],
)
def test_changes_without_a_token_are_401(api, assert_problem, method, path):
    response = api.client.request(method, path, json=api.new_item())
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/catalog/items"),
        ("put", "/api/catalog/items/1"),
        ("patch", "/api/catalog/items/1"),
        ("delete", "/api/catalog/items/1"),
    ],
)
def test_changes_by_a_non_admin_are_403(api, assert_problem, user_headers, method, path):
    before = api.get_item(1)
    response = api.client.request(method, path, json=api.new_item(), headers=user_headers)
    assert_problem(response, 403)
    assert api.get_item(1) == before


def test_a_forged_admin_token_is_401(api, assert_problem):
    from eshop_common.auth import mint_token

    forged = mint_token("not-the-secret-" * 3, "mallory", admin=True)
    response = api.client.post(
        "/api/catalog/items", json=api.new_item(), headers={"Authorization": f"Bearer {forged}"}
    )
    assert_problem(response, 401)
