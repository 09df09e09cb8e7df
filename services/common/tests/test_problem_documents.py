"""Errors are RFC 9457 problem details, and the OpenAPI document says so: one `ProblemDetails`
schema (RFC 9457 §3.1), every error response declared as `application/problem+json` (§3)."""

from __future__ import annotations

from typing import Annotated, Any

import jsonschema
import pytest
from fastapi import FastAPI, Query
from fastapi.testclient import TestClient
from pydantic import BaseModel

from basket.main import app as basket_app
from catalog.config import Settings as CatalogSettings
from catalog.main import create_catalog_app
from eshop_common.problems import (
    PROBLEM_JSON,
    Conflict,
    install_problem_handlers,
    problem_responses,
)


class Thing(BaseModel):
    name: str


def make_app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/things", responses=problem_responses(409))
    def create_thing(thing: Thing, size: Annotated[int, Query(ge=1)] = 1) -> Thing:
        if thing.name == "taken":
            raise Conflict("That name is taken.")
        return thing

    @app.get("/things")
    def read_things() -> list[Thing]:
        return []

    return app


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return make_app()


@pytest.fixture(scope="module")
def client(app: FastAPI) -> TestClient:
    return TestClient(app)


def _validator(document: dict[str, Any]) -> jsonschema.Validator:
    schema = {"$ref": "#/components/schemas/ProblemDetails", **document}
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize(
    ("request_args", "status"),
    [
        ({"json": {"name": "taken"}}, 409),
        ({"json": {"name": 1}}, 422),
        ({"json": {"name": "x"}, "params": {"size": 0}}, 422),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400),
    ],
)
def test_each_error_is_a_problem_that_fits_the_declared_schema(client, app, request_args, status):
    response = client.post("/things", **request_args)
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM_JSON
    _validator(app.openapi()).validate(response.json())


def test_the_document_declares_the_problems_with_one_schema(app):
    responses = app.openapi()["paths"]["/things"]["post"]["responses"]
    assert set(responses) == {"200", "400", "409", "422"}
    for status in ("400", "409", "422"):
        assert responses[status]["content"] == {
            PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}
        }


def test_a_405_names_every_method_the_path_takes(client):
    """RFC 9110 §15.5.6: the origin server MUST send an Allow header field listing the target
    resource's methods. FastAPI makes one route per method; Allow must still name them all."""
    response = client.delete("/things")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert response.headers["content-type"] == PROBLEM_JSON


@pytest.mark.parametrize("document", ["catalog", "basket"])
def test_every_error_either_api_declares_is_a_problem(document):
    apps = {"catalog": lambda: create_catalog_app(CatalogSettings()), "basket": lambda: basket_app}
    openapi = apps[document]().openapi()
    assert "HTTPValidationError" not in openapi["components"]["schemas"]
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert list(response["content"]) == [PROBLEM_JSON], (method, path, status)
