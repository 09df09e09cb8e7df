"""Traces and metrics, one setup for every service.

Traces: the OpenTelemetry SDK with the standard instrumentations, exported over OTLP/HTTP to the
same backend as the sidecars' spans, so a request's app spans and sidecar spans form one trace.
Configured by the standard variables only:

- `OTEL_SDK_DISABLED=true`: no tracer provider and no instrumentation (nothing is recorded or
  exported; the sidecars still pass `traceparent` on);
- `OTEL_EXPORTER_OTLP_ENDPOINT` (`http://localhost:4318` by default), `OTEL_TRACES_EXPORTER=none`
  to record without exporting;
- `OTEL_SERVICE_NAME` (default: the Dapr app id), `OTEL_TRACES_SAMPLER` / `_ARG` (default
  `parentbased_always_on`: follow the caller's decision, sample the rest).

Spans leave through a `BatchSpanProcessor`: ending a span puts it in a bounded queue, and a
background thread exports batches, so a trace backend that is slow or down costs a request
nothing (spans are dropped when the queue is full).

Metrics: `prometheus_client`'s default registry, served at `/metrics` (`metrics_route`), with
`http_server_request_duration_seconds` per route for every service (`RequestMetrics`) and each
service's own counters beside it.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from fastapi import FastAPI
from opentelemetry import trace
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Paths that are polled (probes, scrapes): no spans for them.
UNTRACED_PATHS = "/healthz,/readyz,/metrics"


def tracing_enabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "false").strip().lower() != "true"


_provider: Any = None


def setup_tracing(service_name: str) -> bool:
    """Install the process's tracer provider (once) and instrument the HTTP clients in use.
    Returns False when tracing is disabled by `OTEL_SDK_DISABLED`."""
    global _provider
    if not tracing_enabled():
        return False
    if _provider is not None:
        return True
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() != "none":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    _instrument_clients()
    return True


def _instrument_clients() -> None:
    """aiohttp, the client every service calls its sidecar with (eshop_common.sidecar): a span
    for each outgoing call, and the `traceparent` header on it (the sidecar continues the trace
    from it)."""
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

    AioHttpClientInstrumentor().instrument()


def install(app: FastAPI, app_id: str) -> None:
    """Everything a service gets: tracing set up for `app_id` (its Dapr app id), a server span
    for each request (the caller's `traceparent` is its parent), the request histogram and the
    `/metrics` route."""
    app.add_route("/metrics", metrics_route, include_in_schema=False)
    app.add_middleware(RequestMetrics)
    if setup_tracing(app_id):
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        # No spans for each ASGI receive and send inside a request: noise in every trace.
        FastAPIInstrumentor.instrument_app(
            app, excluded_urls=UNTRACED_PATHS, exclude_spans=["receive", "send"]
        )


def instrument_engine(engine: Any) -> None:
    """A span per SQL statement on `engine` (a SQLAlchemy Engine)."""
    if not tracing_enabled():
        return
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    # The instrumentation declares SQLAlchemy < 2.1 and would do nothing on the locked 2.1; the
    # engine events it uses are unchanged in 2.1 (tests/e2e/test_observability.py sees the spans).
    SQLAlchemyInstrumentor().instrument(engine=engine, enable_commenter=False, skip_dep_check=True)


def shutdown_tracing() -> None:
    """Export what is queued (bounded by the exporter's timeout), then stop."""
    if _provider is not None:
        _provider.shutdown()


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current span, to continue this trace later (an outbox
    row's event is published by another thread, long after the request ended)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


class TraceIdLogFilter(logging.Filter):
    """Adds `trace_id` to every record: the current trace's id, or `-` outside one."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        record.trace_id = f"{context.trace_id:032x}" if context.is_valid else "-"
        return True


# ---- metrics ------------------------------------------------------------------------------
# No `*_created` gauge beside every counter and histogram: Prometheus does not need them.
disable_created_metrics()  # type: ignore[no-untyped-call]

REQUEST_DURATION = Histogram(
    "http_server_request_duration_seconds",
    "Time from a request's arrival to the end of its response, per route template.",
    ["method", "route", "status_code"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class RequestMetrics:
    """ASGI middleware: observe each HTTP request's duration under its route's template
    (`/api/basket/items/{productId}`), so the label set stays small; unmatched paths share one
    label. The count of the histogram is the request rate."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            REQUEST_DURATION.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - start
            )


async def metrics_route(_: Request) -> Response:
    """The process's metrics in Prometheus' text format."""
    # Collectors may query (the catalog's outbox): not on the event loop.
    body = await run_in_threadpool(generate_latest)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
