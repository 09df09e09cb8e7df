"""HEAD on every GET route (RFC 9110 §9.1: general-purpose servers MUST support GET and HEAD):
the GET's status and header fields, Content-Length and validators included (§9.3.2), and no
body; a route without GET still refuses HEAD with 405 (§15.5.6)."""

from __future__ import annotations

from fastapi import Body, FastAPI, Response
from fastapi.testclient import TestClient

from eshop_common.app import HeadAsGet


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/thing")
    def thing(response: Response) -> dict[str, str]:
        response.headers["ETag"] = '"7"'
        return {"name": "a thing with a body"}

    @app.post("/things")
    def add(body: dict[str, str] = Body()) -> dict[str, str]:  # noqa: B008
        return body

    app.add_middleware(HeadAsGet)
    return app


def test_head_has_the_gets_status_and_header_fields_and_no_body():
    client = TestClient(make_app())
    get, head = client.get("/thing"), client.head("/thing")
    assert (head.status_code, head.content) == (200, b"")
    for field in ("content-length", "content-type", "etag"):
        assert head.headers[field] == get.headers[field], field


def test_head_of_an_unknown_path_is_the_gets_404_without_a_body():
    head = TestClient(make_app()).head("/nothing")
    assert (head.status_code, head.content) == (404, b"")


def test_head_of_a_route_without_get_is_405():
    assert TestClient(make_app()).head("/things").status_code == 405
