"""RFC 9457 problem details: one exception hierarchy, rendered by one set of handlers, and one
schema that every route's error responses declare in the OpenAPI document."""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Annotated, Any, ClassVar, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBLEM_JSON = "application/problem+json"

log = logging.getLogger(__name__)


class FieldError(BaseModel):
    """One input the service refused: where it was and what was wrong with it."""

    model_config = ConfigDict(populate_by_name=True)

    field: str
    in_: Literal["body", "query", "path", "header", "cookie"] = Field(alias="in")
    message: str


class ProblemDetails(BaseModel):
    """RFC 9457 §3.1: what went wrong, in a body a client can rely on. Extension members (§3.2) such
    as `errors` or `itemId` may follow; clients ignore those they do not know."""

    model_config = ConfigDict(extra="allow", title="ProblemDetails")

    type: Annotated[str, Field(json_schema_extra={"format": "uri-reference"})] = "about:blank"
    title: str
    status: Annotated[int, Field(ge=400, le=599)]
    detail: str | SkipJsonSchema[None] = None
    instance: str | SkipJsonSchema[None] = None
    errors: list[FieldError] | SkipJsonSchema[None] = None


PROBLEM_SCHEMA_REF = {"$ref": "#/components/schemas/ProblemDetails"}

# Why a service answers each status. `problem_responses` declares them on a route, so the OpenAPI
# document lists every status the route can return (RFC 9457 §3: as application/problem+json).
REASONS: dict[int, str] = {
    400: "The request is malformed: not JSON, or a header the service cannot parse",
    401: "No bearer token, or one that is expired, forged or has claims of the wrong type",
    403: "The token is valid but lacks the role this operation needs",
    404: "The resource does not exist",
    409: "The request conflicts with the resource's current state",
    412: "A precondition (If-Match, If-None-Match) does not hold (RFC 9110 §13.1)",
    415: "The request body is not in a media type this operation takes",
    422: "The body or a parameter is well-formed but not acceptable; `errors` names the fields",
    428: "This write needs a precondition header (RFC 6585 §3)",
    503: "A dependency is unavailable or the service is overloaded; retry after Retry-After",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "The scheme to authenticate with (RFC 6750 §3)",
            "schema": {"type": "string"},
        }
    },
    503: {
        "Retry-After": {
            "description": "Seconds to wait before retrying (RFC 9110 §10.2.3)",
            "schema": {"type": "string"},
        }
    },
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` for these error statuses, each an RFC 9457 problem details body."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        response: dict[str, Any] = {
            "description": REASONS.get(status, HTTPStatus(status).phrase),
            "content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA_REF}},
        }
        if status in _HEADERS:
            response["headers"] = _HEADERS[status]
        responses[status] = response
    return responses


def _declare_input_problems(operation: dict[str, Any]) -> None:
    # FastAPI adds its own 422 (HTTPValidationError, application/json) to every operation with
    # inputs; ours is problem details. A JSON body that does not parse is 400
    # (`_on_validation_error`).
    responses = operation.setdefault("responses", {})
    if "422" in responses and PROBLEM_JSON not in responses["422"].get("content", {}):
        responses["422"] = problem_responses(422)[422]
    if "requestBody" in operation and "400" not in responses:
        responses["400"] = problem_responses(400)[400]


def _headers_are_never_null(operation: dict[str, Any]) -> None:
    # An optional header (`str | None = None`) is absent or a string on the wire, never JSON null;
    # FastAPI's `anyOf: [string, null]` would have clients send the text "null".
    for parameter in operation.get("parameters", []):
        schema = parameter.get("schema", {})
        if parameter.get("in") == "header" and "anyOf" in schema:
            kinds = [kind for kind in schema["anyOf"] if kind.get("type") != "null"]
            if len(kinds) == 1:
                del schema["anyOf"]
                schema.update(kinds[0])


def install_problem_schema(app: FastAPI) -> None:
    """Put `ProblemDetails` in the app's OpenAPI components, where `problem_responses` points,
    and drop FastAPI's own validation-error schemas, which no response of ours has."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                description=app.description,
                routes=app.routes,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            problem = ProblemDetails.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(problem.pop("$defs", {}))
            for member in problem["properties"].values():
                if member.get("default", "") is None:  # absent, not null, on the wire
                    del member["default"]
            components["ProblemDetails"] = problem
            for unused in ("HTTPValidationError", "ValidationError"):
                components.pop(unused, None)
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    _declare_input_problems(operation)
                    _headers_are_never_null(operation)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


class Problem(Exception):
    """An error that knows its own HTTP status; raise it anywhere below a route."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "about:blank"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = headers
        self.extensions = extensions

    @property
    def title(self) -> str:
        return HTTPStatus(self.status).phrase

    def body(self) -> dict[str, Any]:
        return problem_body(self.status, self.title, self.detail, self.type, **self.extensions)


class BadRequest(Problem):
    status = 400


class Unauthorized(Problem):
    status = 401

    def __init__(self, detail: str | None = None, **extensions: Any) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"}, **extensions)


class Forbidden(Problem):
    status = 403


class NotFound(Problem):
    status = 404


class Conflict(Problem):
    status = 409


class PreconditionFailed(Problem):
    status = 412


class UnsupportedMediaType(Problem):
    status = 415


class UnprocessableContent(Problem):
    status = 422


class PreconditionRequired(Problem):
    status = 428


class ServiceUnavailable(Problem):
    status = 503

    def __init__(self, detail: str | None = None, *, retry_after: int = 1, **extensions: Any):
        super().__init__(detail, headers={"Retry-After": str(retry_after)}, **extensions)


class Overloaded(ServiceUnavailable):
    """More requests than the service takes on at once: the service is fine, and a retry a
    moment later will most likely be served. Not an outage of anything it depends on."""

    type = "/problems/overloaded"


def problem_body(
    status: int,
    title: str,
    detail: str | None = None,
    type_: str = "about:blank",
    **extensions: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type_, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extensions)
    return body


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body = problem_body(status, title or HTTPStatus(status).phrase, detail, **extensions)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def _field_name(loc: tuple[int | str, ...]) -> str:
    # ("body", "items", 0, "quantity") -> "items[0].quantity"; loc[0] says where it came from.
    name = ""
    for part in loc[1:] if len(loc) > 1 else loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


async def _on_problem(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return JSONResponse(
        exc.body(), status_code=exc.status, headers=exc.headers, media_type=PROBLEM_JSON
    )


async def _on_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "field": _field_name(tuple(err["loc"])),
            "in": str(err["loc"][0]) if err["loc"] else "body",
            "message": err["msg"],
        }
        for err in exc.errors()
    ]
    if any(err["type"] == "json_invalid" for err in exc.errors()):
        return problem_response(400, "The request body is not valid JSON.", errors=errors)
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem_response(422, detail, title="Validation failed", errors=errors)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str:
    # Starlette's 405 names only the methods of the first route whose path matched, but FastAPI
    # makes one route per method: ask the router which methods this path takes (RFC 9110
    # §15.5.6, §10.2.1).
    routes: list[BaseRoute] = request.app.router.routes
    allowed = [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]
    return ", ".join(allowed)


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if exc.detail != HTTPStatus(exc.status_code).phrase else None
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return problem_response(exc.status_code, detail, headers=headers)


# W3C Trace Context §3.2: version-traceid-parentid-flags, lowercase hex; an all-zero id is invalid.
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-(?!0{32})([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


def trace_id(request: Request) -> str | None:
    """The trace id of the request's `traceparent` header (what the sidecar sends), if valid."""
    match = _TRACEPARENT.match(request.headers.get("traceparent", ""))
    return match.group(1) if match else None


async def _on_unexpected(request: Request, _: Exception) -> JSONResponse:
    # Nothing about the exception goes to the client; the trace id finds the logged traceback.
    extensions: dict[str, Any] = {"traceId": tid} if (tid := trace_id(request)) else {}
    return problem_response(500, "An unexpected error occurred; it has been logged.", **extensions)


class UnexpectedErrors:
    """ASGI middleware: an exception that no handler took is logged once, with its traceback, and
    answered with the app's handler for `Exception` (a 500 problem); the exception stops here.

    Starlette's ServerErrorMiddleware sends the same 500 and then raises the exception on to the
    server, as Starlette's documentation asks of errors. uvicorn then closes the connection after a
    complete response that never said `Connection: close`, so a client that pools connections (a
    Dapr sidecar) may send its next request, another buyer's, into a closed socket and get
    `connection reset by peer`. Here the connection stays open.

    Once the response has started, the exception goes on to the server, which closes the
    connection: that is the only way to tell the client that the body it got is incomplete.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_and_note_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_start)
        except Exception as exc:
            if started:
                raise
            request = Request(scope, receive)
            tid = trace_id(request)
            where = f"{request.method} {request.url.path}" + (f", trace id {tid}" if tid else "")
            log.error("unhandled error in %s", where, exc_info=exc)
            response = await _render_unexpected(request, exc)
            await response(scope, receive, send)


async def _render_unexpected(request: Request, exc: Exception) -> Response:
    # The app's own handler for Exception (the storefront's is an HTML page), as Starlette's
    # ServerErrorMiddleware would pick it: registered under Exception or 500.
    handlers = request.app.exception_handlers
    handler: Callable[[Request, Exception], Response | Awaitable[Response]] = (
        handlers.get(Exception) or handlers.get(500) or _on_unexpected
    )
    response = handler(request, exc)
    return await response if inspect.isawaitable(response) else response


def install_problem_handlers(app: FastAPI) -> None:
    """Render every error as a problem: `Problem`s, validation errors, HTTP errors, and any other
    exception as a 500 on a connection that stays open (`UnexpectedErrors`). Middleware that the
    app adds later wraps `UnexpectedErrors`, and so sees that 500 as a response."""
    install_problem_schema(app)
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    # Also what ServerErrorMiddleware sends for an exception raised outside UnexpectedErrors.
    app.add_exception_handler(Exception, _on_unexpected)
    app.add_middleware(UnexpectedErrors)
