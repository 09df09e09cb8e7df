"""Apps with routes that fail unexpectedly, for test_unexpected_errors.py; `serve failing_app:app`
runs one behind a sidecar. `app` is built by eshop_common's factory; `control` answers the same
500 problem from a handler for `Exception` on a plain FastAPI app, Starlette's default path, which
raises the exception on to the server after the response."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from eshop_common import health
from eshop_common.app import create_app
from eshop_common.problems import Conflict, problem_response
from eshop_common.settings import ServiceSettings

# What a real failure might carry; it must never reach a client.
SECRET = "password=hunter2 at db.internal:5432"


async def always_ready(_: Request) -> None:
    return None


def add_failing_routes(app: FastAPI) -> FastAPI:
    @app.get("/boom")
    async def fail() -> None:
        raise RuntimeError(SECRET)

    @app.get("/boom-while-streaming")
    async def fail_while_streaming() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"the first part\n"
            raise RuntimeError(SECRET)

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/conflict")
    async def conflict() -> None:
        raise Conflict("That name is taken.")

    @app.get("/square")
    async def square(n: int) -> dict[str, int]:
        return {"square": n * n}

    @app.post("/echo")
    async def echo(body: dict[str, Any]) -> dict[str, Any]:
        return body

    return app


def make_app() -> FastAPI:
    app = create_app(
        app_id="failing",
        title="failing",
        description="Routes that fail unexpectedly.",
        settings=ServiceSettings(),
        readiness_check=always_ready,
        lifespan=None,
    )
    return add_failing_routes(app)


async def _problem_500(_: Request, __: Exception) -> JSONResponse:
    return problem_response(500, "An unexpected error occurred; it has been logged.")


def make_control() -> FastAPI:
    app = FastAPI()
    app.add_exception_handler(Exception, _problem_500)
    app.include_router(health.router)
    return add_failing_routes(app)


app = make_app()
control = make_control()
