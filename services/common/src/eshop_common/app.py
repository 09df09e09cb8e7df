"""One way to build a service's FastAPI app: problem handlers, identity, health, logging, traces
and metrics."""

import gc
import logging
from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import AliasChoices, BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eshop_common import health, telemetry
from eshop_common.auth import TokenVerifier
from eshop_common.overload import LoadShedding
from eshop_common.problems import install_problem_handlers, problem_responses
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


# At most this many unknown names are named in one answer: it says no more than it must.
UNKNOWN_NAMES_SHOWN = 20


async def known_query_parameters(request: Request) -> None:
    """Refuse a query parameter that the matched operation does not take.

    Ignored, it would get an answer to a question that was not asked (a misspelt `pagesize`
    gets the default page size, without a word), and the OpenAPI document, which lists every
    parameter there is, would not tell the truth. What the operation takes is what FastAPI
    parses for it: its query parameters, their aliases included. The check comes first, before
    the token and the values are looked at: like a body that is not JSON, a request of the
    wrong shape is refused whoever sends it.

    Raises RequestValidationError (422 problem details, each unknown name, up to
    UNKNOWN_NAMES_SHOWN, an `extra_forbidden` error in the query: what FastAPI answers for a
    query model with `extra="forbid"`)."""
    if not request.scope.get("query_string"):
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    declared = _query_parameter_names(route)
    unknown = [name for name in request.query_params if name not in declared]
    if unknown:
        takes = ", ".join(sorted(declared)) or "none"
        raise RequestValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ("query", name),
                    "msg": f"not a parameter of this operation (it takes: {takes})",
                    "input": None,
                }
                for name in unknown[:UNKNOWN_NAMES_SHOWN]
            ]
        )


_QUERY_NAMES: dict[int, tuple[APIRoute, frozenset[str]]] = {}


def _query_parameter_names(route: APIRoute) -> frozenset[str]:
    """Every name FastAPI reads a query parameter of `route` under: its own and its
    dependencies', the fields of a query model, aliases and alias choices included. Worked out
    once per route."""
    if id(route) not in _QUERY_NAMES:
        names: set[str] = set()
        pending = [route.dependant]
        while pending:
            dependant = pending.pop()
            pending.extend(dependant.dependencies)
            for field in dependant.query_params:
                model = field.field_info.annotation
                if isinstance(model, type) and issubclass(model, BaseModel):
                    for name, info in model.model_fields.items():
                        names |= _aliases(info.alias or name, info.validation_alias)
                else:
                    names |= _aliases(field.alias, field.field_info.validation_alias)
        _QUERY_NAMES[id(route)] = (route, frozenset(names))  # kept alive, so its id stays its own
    return _QUERY_NAMES[id(route)][1]


def _aliases(alias: str, validation_alias: object) -> set[str]:
    if isinstance(validation_alias, AliasChoices):
        return {alias, *(c for c in validation_alias.choices if isinstance(c, str))}
    return {alias, validation_alias} if isinstance(validation_alias, str) else {alias}


def _unknown_query_parameters_are_refused(document: dict[str, Any]) -> None:
    # Every operation can answer 422 for a query parameter it does not take; FastAPI documents
    # 422 only on operations that have inputs of their own.
    for path in document.get("paths", {}).values():
        for operation in path.values():
            operation.setdefault("responses", {}).setdefault("422", problem_responses(422)[422])


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
        dependencies=[Depends(known_query_parameters)],
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
    extend_openapi(app, _unknown_query_parameters_are_refused)
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
