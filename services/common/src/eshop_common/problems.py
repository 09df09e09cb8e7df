"""RFC 9457 problem details: one exception hierarchy, rendered by one set of handlers."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"

log = logging.getLogger(__name__)


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


class UnprocessableContent(Problem):
    status = 422


class ServiceUnavailable(Problem):
    status = 503

    def __init__(self, detail: str | None = None, *, retry_after: int = 1, **extensions: Any):
        super().__init__(detail, headers={"Retry-After": str(retry_after)}, **extensions)


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


async def _on_http_exception(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if exc.detail != HTTPStatus(exc.status_code).phrase else None
    return problem_response(exc.status_code, detail, headers=exc.headers)


async def _on_unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return problem_response(500, "An unexpected error occurred; it has been logged.")


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)
