"""A query parameter an operation does not declare is refused (422 problem details naming it),
never ignored: the OpenAPI document lists every parameter there is (OpenAPI 3.1 §4.8.12), and an
ignored one answers another question than the one asked (a misspelt `pagesize` would get the
default page size). Generated names and values; a plain FastAPI app is the control: it ignores
them, which is what these tests catch."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from failing_app import always_ready
from fastapi import APIRouter, Depends, FastAPI, Query
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from pydantic import AliasChoices, BaseModel, Field

from eshop_common.app import UNKNOWN_NAMES_SHOWN, create_app
from eshop_common.auth import CurrentUser
from eshop_common.problems import PROBLEM_JSON
from eshop_common.settings import ServiceSettings

DECLARED = {"pageSize", "q"}


async def paging(cursor: str | None = None) -> str | None:
    return cursor


class Filters(BaseModel):
    colour: str | None = None
    size_label: str | None = Field(default=None, alias="sizeLabel")


def add_routes(app: FastAPI) -> FastAPI:
    @app.get("/items")
    async def list_items(
        page_size: Annotated[int, Query(alias="pageSize", ge=1, le=100)] = 10,
        q: str | None = None,
    ) -> dict[str, object]:
        return {"pageSize": page_size, "q": q}

    @app.get("/brands")
    async def list_brands() -> list[str]:
        return ["a brand"]

    # What FastAPI parses in other ways is taken too: a dependency's parameter, a query model's
    # fields, alias choices, a parameter left out of the document, a route under a prefix given
    # when its router is included.
    router = APIRouter()

    @router.get("/shoes")
    async def list_shoes(
        cursor: Annotated[str | None, Depends(paging)],
        filters: Annotated[Filters, Query()],
        limit: Annotated[int, Query(validation_alias=AliasChoices("limit", "max"))] = 5,
        debug: Annotated[bool, Query(include_in_schema=False)] = False,
    ) -> dict[str, object]:
        return {"cursor": cursor, "colour": filters.colour, "limit": limit, "debug": debug}

    @router.get("/mine")
    async def mine(user: CurrentUser) -> str:
        return user.id

    app.include_router(router, prefix="/v2")
    return app


def make_app() -> FastAPI:
    app = create_app(
        app_id="query", title="query", description="Routes with and without query parameters.",
        settings=ServiceSettings(), readiness_check=always_ready, lifespan=None,
    )  # fmt: skip
    return add_routes(app)


client = TestClient(make_app())
control = TestClient(add_routes(FastAPI()))

# Any name a client could send: printable text, percent-encoded on the way, so `&`, `=`, `%`,
# spaces and the empty name all reach the service as names.
names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20).filter(
    lambda name: name not in DECLARED
)
values = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)


def unknown_parameter_refused(response, names: set[str]) -> bool:  # type: ignore[no-untyped-def]
    if response.status_code != 422:
        return False
    assert response.headers["content-type"] == PROBLEM_JSON
    errors = response.json()["errors"]
    return {e["field"] for e in errors} == names and {e["in"] for e in errors} == {"query"}


@given(
    unknown=st.dictionaries(names, values, min_size=1, max_size=3),
    page_size=st.none() | st.integers(1, 100),
)
def test_an_unknown_query_parameter_is_refused_with_its_name(unknown, page_size):
    query = dict(unknown) | ({"pageSize": str(page_size)} if page_size is not None else {})
    for path in ("/items", "/brands"):
        response = client.get(f"{path}?{urlencode(query)}")
        expected = set(unknown) | (
            {"pageSize"} if path == "/brands" and page_size is not None else set()
        )
        assert unknown_parameter_refused(response, expected), (path, query, response.text)


@given(page_size=st.integers(1, 100), q=values)
def test_declared_query_parameters_are_answered(page_size, q):
    response = client.get(f"/items?{urlencode({'pageSize': page_size, 'q': q})}")
    assert response.status_code == 200, response.text
    assert response.json() == {"pageSize": page_size, "q": q}


def test_a_request_without_a_query_is_not_checked():
    assert client.get("/items").status_code == 200
    assert client.get("/brands").status_code == 200


def test_what_fastapi_parses_is_taken_wherever_it_is_declared():
    query = "cursor=c1&colour=red&sizeLabel=M&max=7&debug=true"
    response = client.get(f"/v2/shoes?{query}")
    assert response.status_code == 200, response.text
    assert response.json() == {"cursor": "c1", "colour": "red", "limit": 7, "debug": True}
    assert unknown_parameter_refused(client.get("/v2/shoes?colour=red&q=x"), {"q"})


def test_the_shape_of_the_query_is_checked_before_the_token():
    # Like a body that is not JSON (400 before 401), a request of the wrong shape is refused
    # whoever sends it; a well-formed one without a token is 401.
    assert client.get("/v2/mine").status_code == 401
    assert unknown_parameter_refused(client.get("/v2/mine?x=1"), {"x"})


def test_an_answer_names_a_bounded_number_of_unknown_parameters():
    response = client.get("/brands?" + "&".join(f"n{i}=1" for i in range(1000)))
    assert unknown_parameter_refused(response, {f"n{i}" for i in range(UNKNOWN_NAMES_SHOWN)})
    assert len(response.content) < 10_000


def test_the_problem_says_which_parameters_the_operation_takes():
    detail = client.get("/items?pagesize=5").json()["detail"]
    assert detail.count("pageSize, q") == 1, detail
    assert "pagesize" in detail, detail
    assert "pageSize, q" in detail, detail
    assert "takes: none" in client.get("/brands?page=2").json()["detail"]


def test_head_is_checked_as_its_get():
    assert client.head("/brands?page=2").status_code == 422


def test_every_documented_operation_documents_the_422():
    document = client.get("/openapi.json").json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            content = operation["responses"]["422"]["content"]
            assert PROBLEM_JSON in content, (method, path)


def test_control_a_plain_fastapi_app_ignores_unknown_query_parameters():
    # Without the check the misspelt parameter is dropped and the default answers: the fault
    # the tests above would catch.
    assert control.get("/items?pagesize=5").json() == {"pageSize": 10, "q": None}
    assert control.get("/brands?page=2").status_code == 200
