"""eshop_common.telemetry in one process: log lines name their trace, the traceparent an outbox
row keeps, the request histogram's route labels."""

import io
import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

from eshop_common import telemetry


@pytest.fixture
def tracer(monkeypatch: pytest.MonkeyPatch) -> Tracer:
    """A provider of the test's own (the SDK reads OTEL_SDK_DISABLED when it is made); the
    process's global provider stays unset."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "false")
    return TracerProvider().get_tracer("test")


def logged(message: str) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("[trace_id=%(trace_id)s] %(message)s"))
    handler.addFilter(telemetry.TraceIdLogFilter())
    log = logging.getLogger("test_telemetry")
    log.addHandler(handler)
    try:
        log.warning(message)
    finally:
        log.removeHandler(handler)
    return stream.getvalue().strip()


def test_a_line_logged_inside_a_span_carries_its_trace_id_and_one_outside_a_dash(tracer):
    with tracer.start_as_current_span("request") as span:
        inside = logged("inside")
    trace_id = f"{span.get_span_context().trace_id:032x}"
    assert inside == f"[trace_id={trace_id}] inside"
    assert logged("outside") == "[trace_id=-] outside"


def test_the_current_traceparent_is_w3c_and_names_the_current_span(tracer):
    assert telemetry.current_traceparent() is None
    with tracer.start_as_current_span("request") as span:
        context = span.get_span_context()
        traceparent = telemetry.current_traceparent()
    assert traceparent is not None
    version, trace_id, parent_id, flags = traceparent.split("-")
    assert (version, trace_id, parent_id) == (
        "00",
        f"{context.trace_id:032x}",
        f"{context.span_id:016x}",
    )
    assert int(flags, 16) & 1  # sampled (the SDK also sets level 2's random-trace-id bit)


def test_requests_are_counted_under_their_route_template_not_their_path():
    app = FastAPI()
    telemetry.install(app, "test-app")

    @app.get("/things/{thing_id}")
    async def read_thing(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    with TestClient(app) as client:
        for thing in (1, 2, 3):
            assert client.get(f"/things/{thing}").status_code == 200
        assert client.get("/nowhere").status_code == 404
        text = client.get("/metrics").text
    assert 'route="/things/{thing_id}",status_code="200"} 3.0' in text.replace(
        'http_server_request_duration_seconds_count{method="GET",', "{"
    )
    assert 'route="unmatched",status_code="404"' in text
    assert "/things/1" not in text
