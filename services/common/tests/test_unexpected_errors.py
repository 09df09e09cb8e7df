"""An exception that no handler takes is a 500 problem on a connection that stays open.

Starlette's own path (ServerErrorMiddleware) sends the 500 and raises the exception on to the
server; uvicorn then closes the connection without having said `Connection: close`, and a pooled
client's next request, often another buyer's, fails with `connection reset by peer`. Each test
runs the apps in failing_app.py under a real uvicorn; the last ones put a real daprd in front."""

from __future__ import annotations

import http.client
import logging
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from failing_app import SECRET, make_app, make_control
from fastapi import FastAPI

from devstack.procs import die_with_parent, free_port, wait_until
from devstack.runfile import AppSpec
from devstack.stack import REPO_ROOT, Proc
from eshop_common.problems import PROBLEM_JSON

HERE = Path(__file__).resolve().parent
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
GENERIC_500 = {
    "type": "about:blank",
    "title": "Internal Server Error",
    "status": 500,
    "detail": "An unexpected error occurred; it has been logged.",
}


@contextmanager
def served(app: FastAPI) -> Iterator[int]:
    """`app` under uvicorn (as `serve` runs it) on a free port, in a thread; uvicorn's own log
    records go to the root logger, where caplog sees them."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, proxy_headers=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=10, what="uvicorn")
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def get(conn: http.client.HTTPConnection, path: str, **headers: str) -> http.client.HTTPResponse:
    conn.request("GET", path, headers=headers)
    return conn.getresponse()


def closed_by_server(conn: http.client.HTTPConnection, wait: float = 1.0) -> bool:
    """Whether the server ends the connection within `wait` seconds (the peer's FIN or RST)."""
    assert conn.sock is not None
    conn.sock.settimeout(wait)
    try:
        return conn.sock.recv(1, socket.MSG_PEEK) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.exc_info]


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with served(make_app()) as port:
        yield port


@pytest.fixture
def conn(port: int) -> Iterator[http.client.HTTPConnection]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    yield conn
    conn.close()


def test_an_unexpected_error_is_a_500_problem_and_the_connection_serves_the_next_request(
    conn, caplog
):
    response = get(conn, "/boom")
    body = response.read()
    first_socket = conn.sock

    assert response.status == 500
    assert response.getheader("content-type") == PROBLEM_JSON
    assert response.getheader("connection") is None
    assert httpx.Response(500, content=body).json() == GENERIC_500
    assert SECRET not in body.decode()
    assert "RuntimeError" not in body.decode()
    assert not closed_by_server(conn)

    response = get(conn, "/healthz")
    assert (response.status, response.read()) == (200, b'{"status":"ok"}')
    assert conn.sock is first_socket

    [logged] = tracebacks(caplog)
    assert logged.name == "eshop_common.problems"
    assert logged.getMessage() == "unhandled error in GET /boom"
    assert logged.exc_info is not None
    assert SECRET in str(logged.exc_info[1])


def test_the_problem_and_the_log_line_carry_the_callers_trace_id(conn, caplog):
    response = get(conn, "/boom", traceparent=TRACEPARENT)
    assert httpx.Response(500, content=response.read()).json() == {
        **GENERIC_500,
        "traceId": TRACE_ID,
    }
    [logged] = tracebacks(caplog)
    assert TRACE_ID in logged.getMessage()


def test_problems_validation_and_http_errors_keep_their_handlers_around_a_500(conn):
    first_socket = None
    for path, status, content_type in [
        ("/conflict", 409, PROBLEM_JSON),
        ("/boom", 500, PROBLEM_JSON),
        ("/square?n=ten", 422, PROBLEM_JSON),
        ("/boom", 500, PROBLEM_JSON),
        ("/no-such-page", 404, PROBLEM_JSON),
        ("/square?n=12", 200, "application/json"),
    ]:
        response = get(conn, path)
        body = httpx.Response(status, content=response.read()).json()
        assert (response.status, response.getheader("content-type")) == (status, content_type)
        first_socket = first_socket or conn.sock
        assert conn.sock is first_socket, f"{path} came on a new connection"
        if status == 422:
            assert body["errors"][0]["field"] == "n"
        if status == 200:
            assert body == {"square": 144}


def test_an_error_after_the_response_started_ends_the_connection(conn, caplog):
    """Half a streamed body must not look complete: only closing the connection says so."""
    response = get(conn, "/boom-while-streaming")
    assert response.status == 200
    with pytest.raises(http.client.IncompleteRead) as incomplete:
        response.read()
    assert incomplete.value.partial == b"the first part\n"
    assert closed_by_server(conn)
    [logged] = tracebacks(caplog)  # by uvicorn, which closed the connection
    assert logged.name == "uvicorn.error"


def test_the_control_starlettes_default_path_drops_the_connection_after_a_500(caplog):
    """The same problem from a plain `Exception` handler: the 500 arrives, without
    `Connection: close`, and then the server closes the connection under the client."""
    with served(make_control()) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        response = get(conn, "/boom")
        assert response.status == 500
        assert httpx.Response(500, content=response.read()).json() == GENERIC_500
        assert response.getheader("connection") is None
        assert closed_by_server(conn)
        conn.close()
    assert [record.name for record in tracebacks(caplog)] == ["uvicorn.error"]


def test_the_storefront_answers_an_unexpected_error_with_its_page_on_an_open_connection(caplog):
    from web.main import SECURITY_HEADERS, create_web_app

    app = create_web_app()

    @app.get("/boom")
    async def fail() -> None:
        raise RuntimeError(SECRET)

    with served(app) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        response = get(conn, "/boom")
        page = response.read().decode()
        assert response.status == 500
        assert response.getheader("content-type", "").startswith("text/html")
        assert "Something went wrong" in page
        assert SECRET not in page
        for name, value in SECURITY_HEADERS.items():
            assert response.getheader(name) == value
        first_socket = conn.sock
        assert not closed_by_server(conn)
        response = get(conn, "/healthz")
        assert (response.status, response.read()) == (200, b'{"status":"ok"}')
        assert conn.sock is first_socket
        conn.close()
    assert [record.name for record in tracebacks(caplog)] == ["eshop_common.problems"]


# -- through a Dapr sidecar ------------------------------------------------------------------
ROUNDS = 60


@contextmanager
def behind_a_sidecar(daprd: Path, app: str, workdir: Path) -> Iterator[str]:
    """`serve failing_app:<app>` with its own daprd, as dapr.yaml runs a service; yield the URL
    that invokes it through that sidecar (service invocation, the sidecar's pooled connections
    to the app)."""
    app_id = f"failing-{app}"
    resources = workdir / "resources"  # no components: invocation needs none
    resources.mkdir(parents=True)
    spec = AppSpec(
        app_id=app_id, app_dir=HERE,
        app_port=free_port(), dapr_http_port=free_port(), dapr_grpc_port=free_port(),
        dapr_internal_grpc_port=free_port(), metrics_port=free_port(),
        command=["uv", "run", "--no-sync", "serve", f"failing_app:{app}"],
        resources_path=resources, config_file=REPO_ROOT / "components" / "config" / "local.yaml",
        log_level="info", app_protocol="http", env={},
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("DAPR_API_TOKEN", "APP_API_TOKEN")}
    app_env = {**env, "PYTHONPATH": str(HERE), "APP_PORT": str(spec.app_port)}
    daprd_env = {
        **env,
        "NAME_RESOLUTION_DB": str(workdir / "nameresolution.db"),
        "DAPR_HOST_IP": "127.0.0.1",
        # Tracing off: the sidecar hands the caller's traceparent on as it came.
        "DAPR_TRACING_SAMPLING_RATE": "0",
        "DAPR_OTLP_ENDPOINT": "",
    }
    invoke = f"http://127.0.0.1:{spec.dapr_http_port}/v1.0/invoke/{app_id}/method"

    def spawn(name: str, argv: list[str], env: dict[str, str]) -> Proc:
        with (workdir / f"{name}.log").open("wb") as log:
            popen = subprocess.Popen(
                argv, cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent,
            )  # fmt: skip
        return Proc(name, popen)

    def invocable() -> bool:
        try:
            return httpx.get(f"{invoke}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    with ExitStack() as procs:
        procs.callback(spawn(app, spec.command, app_env).stop)
        procs.callback(spawn(f"{app}-dapr", [str(daprd), *spec.daprd_args()], daprd_env).stop)
        wait_until(invocable, timeout=90, what=f"{app_id} through its sidecar", interval=0.25)
        yield invoke


def failures_after_unexpected_errors(invoke: str) -> list[str]:
    """ROUNDS times: a request that fails unexpectedly, then at once another buyer's healthy
    request through the same sidecar. What went wrong, one line each."""
    failures = []
    with httpx.Client(timeout=10) as client:
        for n in range(ROUNDS):
            boom = client.get(f"{invoke}/boom")
            if boom.headers.get("content-type") != PROBLEM_JSON:
                failures.append(f"boom {n}: {boom.status_code} {boom.text[:300]}")
            healthy = client.post(f"{invoke}/echo", json={"buyer": n})
            if healthy.status_code != 200 or healthy.json() != {"buyer": n}:
                failures.append(f"echo {n}: {healthy.status_code} {healthy.text[:300]}")
    return failures


def test_through_a_sidecar_every_request_after_an_unexpected_error_succeeds(daprd_path, tmp_path):
    with behind_a_sidecar(daprd_path, "app", tmp_path) as invoke:
        boom = httpx.get(f"{invoke}/boom", headers={"traceparent": TRACEPARENT}, timeout=10)
        assert boom.status_code == 500
        assert boom.headers["content-type"] == PROBLEM_JSON
        assert boom.json() == {**GENERIC_500, "traceId": TRACE_ID}
        assert failures_after_unexpected_errors(invoke) == []
    log = (tmp_path / "app.log").read_text()
    assert log.count("Traceback") == ROUNDS + 1
    assert "Exception in ASGI application" not in log


def test_the_control_through_a_sidecar_loses_requests_after_unexpected_errors(daprd_path, tmp_path):
    """The issue, reproduced: Starlette's default path, the same sidecar, the same requests."""
    with behind_a_sidecar(daprd_path, "control", tmp_path) as invoke:
        failures = failures_after_unexpected_errors(invoke)
    assert failures, "the control lost no request: the test above would prove nothing"
    assert any("connection reset" in failure for failure in failures), failures[:3]
