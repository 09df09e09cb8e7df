"""A query parameter that an operation does not take is 422 problem details naming it, never
ignored: each operation's OpenAPI document lists every parameter there is (OpenAPI 3.1
§4.8.12), and an ignored one answers another question than the one asked (a misspelt
`pagesize` would get the default page size). Generated names and values, on every catalog
operation that takes query parameters; a query model that ignores extra names is the control."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import FastAPI, Query
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ConfigDict

from catalog.api import ItemsQuery

# Each operation with query parameters: the path, a valid query, and the names it takes.
OPERATIONS = {
    "/api/catalog/items": ({"pageSize": "5"}, {"pageIndex", "pageSize", "brandId", "typeId", "q"}),
    "/api/catalog/items/by-ids": ({"ids": "1,2"}, {"ids"}),
    "/api/catalog/admin/dead-letters": (
        {"pageSize": "5"},
        {"pageIndex", "pageSize", "topic", "eventId"},
    ),
}
TAKEN = set().union(*(names for _, names in OPERATIONS.values()))

# Any name a client could send, percent-encoded on the way, so `&`, `=`, `%`, spaces and the
# empty name all reach the service as names.
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
unknown_names = text.filter(lambda name: name not in TAKEN)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(unknown=st.dictionaries(unknown_names, text, min_size=1, max_size=3))
def test_a_name_an_operation_does_not_take_is_a_422_naming_it(
    client, admin_headers, assert_problem, unknown
):
    for path, (valid, _) in OPERATIONS.items():
        response = client.get(f"{path}?{urlencode(valid | unknown)}", headers=admin_headers)
        body = assert_problem(response, 422)
        named = {(e["field"], e["in"]) for e in body["errors"]}
        assert named == {(name, "query") for name in unknown}, (path, body)


def test_the_names_an_operation_takes_are_answered(client, admin_headers):
    for path, (valid, _) in OPERATIONS.items():
        response = client.get(f"{path}?{urlencode(valid)}", headers=admin_headers)
        assert response.status_code == 200, (path, response.text)


def test_a_misspelt_parameter_is_named_and_the_document_lists_the_right_one(client):
    response = client.get("/api/catalog/items?pagesize=5")
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "pagesize", "in": "query", "message": "Extra inputs are not permitted"}
    ]
    document = client.get("/openapi.json").json()
    for path, (_, names) in OPERATIONS.items():
        parameters = document["paths"][path]["get"]["parameters"]
        assert {p["name"] for p in parameters if p["in"] == "query"} == names, path


def test_without_a_token_the_answer_is_still_401(client):
    # The query is validated with the other inputs, after the token: 401 comes first.
    response = client.get("/api/catalog/admin/dead-letters?pagesize=5")
    assert response.status_code == 401


class Lenient(ItemsQuery):
    model_config = ConfigDict(extra="ignore")


def test_control_a_query_model_that_ignores_extra_names_answers_the_wrong_question():
    app = FastAPI()

    @app.get("/items")
    async def items(query: Annotated[Lenient, Query()]) -> int:
        return query.page_size

    # The misspelt name is dropped and the default page size answers: what the tests above
    # would catch if the catalog's query models stopped forbidding extra names.
    assert TestClient(app).get("/items?pagesize=5").json() == 10
