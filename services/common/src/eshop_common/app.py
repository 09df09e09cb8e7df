"""One way to build a service's FastAPI app: problem handlers, identity, health, logging, traces
and metrics."""

import gc
import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eshop_common import health, telemetry
from eshop_common.auth import TokenVerifier
from eshop_common.overload import LoadShedding
from eshop_common.problems import install_problem_handlers
from eshop_common.settings import ServiceSettings


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        # The trace id finds the request's trace in the trace backend, and its other lines.
        format="%(asctime)s %(levelname)s %(name)s [trace_id=%(trace_id)s]: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, telemetry.TraceIdLogFilter) for f in handler.filters):
            handler.addFilter(telemetry.TraceIdLogFilter())
    # httpx, in a process that has it (FastAPI's TestClient), logs a line per request at INFO,
    # which drowns the service's own messages.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def freeze_startup_objects() -> None:
    """Call at the end of a lifespan's start-up. What exists by then (modules, routes, models)
    lives as long as the process; frozen, it is left out of full garbage collections, which then
    pause the event loop for well under a millisecond instead of ~40 ms. Under load they come
    about once a second, so without this they set the p99."""
    gc.collect()
    gc.freeze()


def _route_name(route: APIRoute) -> str:
    return route.name


class HeadAsGet:
    """HEAD answered as GET without the body (RFC 9110 §9.3.2: the same header fields as a GET,
    Content-Length included). §9.1 asks every general-purpose server to support HEAD, and
    FastAPI's routes accept only the methods they declare. Pure ASGI: the body is dropped as it
    is sent, so a HEAD costs what a GET costs, no more."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, without_body)


def create_app(
    *,
    app_id: str,
    title: str,
    description: str,
    settings: ServiceSettings,
    readiness_check: health.ReadinessCheck,
    lifespan: Any,
) -> FastAPI:
    configure_logging(settings.log_level)
    app = FastAPI(
        title=title,
        description=description,
        version="1.0.0",
        lifespan=lifespan,
        # operationId = the route function's name (read_item, add_basket_item): what a generated
        # client calls, and what the documents' links name.
        generate_unique_id_function=_route_name,
    )
    app.state.token_verifier = TokenVerifier(settings.jwt_secret.get_secret_value())
    app.state.app_api_token = settings.app_api_token
    app.state.readiness_check = readiness_check
    install_problem_handlers(app)
    app.add_middleware(
        LoadShedding,
        max_in_flight=settings.max_in_flight_requests,
        max_waiting=settings.max_waiting_requests,
        max_wait_seconds=settings.max_queue_wait_seconds,
    )
    app.include_router(health.router)
    telemetry.install(app, app_id)
    app.add_middleware(HeadAsGet)
    return app


def extend_openapi(app: FastAPI, change: Callable[[dict[str, Any]], None]) -> None:
    """Let `change` add what only the running service knows to its OpenAPI document, once."""
    make = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            change(make())  # `make` caches the document in app.openapi_schema
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
