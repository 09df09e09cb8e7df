"""Observability tests that reach inside the local stack: a second basket process for contention,
tracing switched off by configuration, the trace backend stopped. `make test` runs them; the
compose run leaves them out (scripts/compose-test)."""

from __future__ import annotations

import re
import statistics
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from devstack.procs import free_port
from devstack.stack import DEMO_DAPR_API_TOKEN, DEMO_JWT_SECRET, Stack
from devstack.traces import Jaeger, new_traceparent
from eshop_common.auth import mint_token


def counter(url: str, name: str) -> float:
    """The sum of a counter's series on an app's /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def basket(url: str, user: str) -> httpx.Client:
    token = mint_token(DEMO_JWT_SECRET, user)
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


@pytest.fixture(scope="module")
def second_basket(stack: Stack) -> Iterator[str]:
    """Another basket-api process on the same sidecar: a second replica's writes."""
    name = "basket-api-observed"
    url = stack.start_extra_app(name, "basket-api", free_port(), {})
    yield url
    stack.stop_process(name)


def test_a_conflict_under_contention_shows_in_the_conflict_counter(stack: Stack, second_basket):
    replicas = [stack.url("basket-api"), second_basket]
    before = {url: counter(url, "basket_etag_conflicts_total") for url in replicas}
    retries_before = sum(counter(url, "basket_write_retries_total") for url in replicas)
    added = 0
    for _ in range(5):  # rounds until the two replicas have collided at least once
        user = f"contended-{uuid.uuid4().hex[:10]}"

        def add(n: int, user: str = user) -> int:
            with basket(replicas[n % 2], user) as client:
                resp = client.post("/api/basket/items", json={"productId": 1, "quantity": 1})
                return resp.status_code

        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = list(pool.map(add, range(40)))
        assert statuses.count(200) == 40, statuses
        added += 40
        with basket(replicas[0], user) as client:
            assert client.get("/api/basket").json()["items"][0]["quantity"] == 40  # none lost
        if sum(counter(url, "basket_etag_conflicts_total") for url in replicas) > sum(
            before.values()
        ):
            break
    conflicts = sum(counter(url, "basket_etag_conflicts_total") - before[url] for url in replicas)
    retries = sum(counter(url, "basket_write_retries_total") for url in replicas) - retries_before
    print(
        f"\n{added} adds from two replicas: {conflicts:.0f} ETag conflicts, {retries:.0f} retries"
    )
    assert conflicts > 0
    assert retries > 0


def test_with_the_sdk_disabled_an_app_works_and_records_nothing(stack: Stack):
    assert stack.jaeger is not None
    jaeger = Jaeger(stack.jaeger.url)
    name = "basket-api-untraced"
    url = stack.start_extra_app(name, "basket-api", free_port(), {"OTEL_SDK_DISABLED": "true"})
    try:
        traced_id, traceparent = new_traceparent()
        with basket(url, f"untraced-{uuid.uuid4().hex[:10]}") as client:
            resp = client.post(
                "/api/basket/items", json={"productId": 1, "quantity": 1},
                headers={"traceparent": traceparent},
            )  # fmt: skip
            assert resp.status_code == 200, resp.text
            assert client.get("/api/basket").status_code == 200
        metrics = httpx.get(f"{url}/metrics", timeout=10)
        assert 'route="/api/basket/items"' in metrics.text  # metrics stay on
        # The control: the traced process, the same request.
        control_id, control_parent = new_traceparent()
        with basket(stack.url("basket-api"), f"traced-{uuid.uuid4().hex[:10]}") as client:
            client.post(
                "/api/basket/items", json={"productId": 1, "quantity": 1},
                headers={"traceparent": control_parent},
            )  # fmt: skip
        jaeger.wait_for(
            control_id,
            lambda t: (
                bool(t.find("basket-api", "POST /api"))
                and bool(t.find("basket-api", "/v1.0/state/statestore"))
            ),
        )
        # Spans from both would have arrived by now (the control's app and sidecar spans did).
        time.sleep(2)
        assert jaeger.trace(traced_id) is None
    finally:
        stack.stop_process(name)


def test_with_sampling_rate_0_the_sidecar_records_nothing_no_app_sampled(stack: Stack):
    """Only the sidecar's own decision: a call with no traceparent. The control is the stack's
    sidecar at rate 1; the sidecar under test is restarted with DAPR_TRACING_SAMPLING_RATE=0."""
    assert stack.jaeger is not None
    jaeger = Jaeger(stack.jaeger.url)

    def untraced_state_read(key: str) -> None:
        resp = httpx.get(
            f"{stack.dapr_url('basket-api')}/v1.0/state/statestore/{key}",
            headers={"dapr-api-token": DEMO_DAPR_API_TOKEN}, timeout=10,
        )  # fmt: skip
        assert resp.status_code in (200, 204), resp.text

    def recorded(key: str, since: float) -> bool:
        return any(
            s.operation.endswith(key)
            for t in jaeger.search("basket-api", since=since, limit=200)
            for s in t.spans
        )

    since = time.time() - 1
    control_key = f"sampled-{uuid.uuid4().hex[:8]}"
    untraced_state_read(control_key)
    deadline = time.monotonic() + 20
    while not recorded(control_key, since) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert recorded(control_key, since), "the control at rate 1 recorded nothing"

    stack.stop_process("basket-api-dapr")
    try:
        stack.start_sidecar("basket-api", extra_env={"DAPR_TRACING_SAMPLING_RATE": "0"})
        stack.wait_ready("basket-api")
        key = f"unsampled-{uuid.uuid4().hex[:8]}"
        untraced_state_read(key)
        with basket(stack.url("basket-api"), key) as client:  # the app works
            assert client.post(
                "/api/basket/items", json={"productId": 1, "quantity": 1}
            ).status_code == 200  # fmt: skip
        time.sleep(7)  # past the sidecar's export interval (5 s)
        assert not recorded(key, since)
    finally:
        stack.stop_process("basket-api-dapr")
        stack.start_sidecar("basket-api")
        stack.wait_ready("basket-api")


def read_latencies(url: str, user: str, rounds: int) -> list[float]:
    with basket(url, user) as client:
        client.post("/api/basket/items", json={"productId": 1, "quantity": 1})
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            assert client.get("/api/basket").status_code == 200
            times.append(time.perf_counter() - start)
    return times


def test_a_trace_backend_that_is_down_does_not_slow_requests(stack: Stack):
    """Spans leave through a bounded queue and a background exporter, in the apps and in the
    sidecars: with Jaeger stopped, basket reads (traced: app and sidecar spans) take as long."""
    assert stack.jaeger is not None
    user = f"latency-{uuid.uuid4().hex[:10]}"
    rounds = 300
    read_latencies(stack.url("basket-api"), user, 50)  # warm
    up = read_latencies(stack.url("basket-api"), user, rounds)
    stack.jaeger.stop()
    try:
        time.sleep(1)
        down = read_latencies(stack.url("basket-api"), user, rounds)
    finally:
        stack.jaeger.start()
    median_up, median_down = statistics.median(up), statistics.median(down)
    p95_up = statistics.quantiles(up, n=20)[-1]
    p95_down = statistics.quantiles(down, n=20)[-1]
    print(
        f"\nbasket GET, {rounds} sequential reads: median {median_up * 1000:.2f} ms with Jaeger "
        f"up, {median_down * 1000:.2f} ms with it stopped; p95 {p95_up * 1000:.2f} / "
        f"{p95_down * 1000:.2f} ms"
    )
    # A blocking exporter would add its timeout (seconds) to a request; the bound is far below.
    assert median_down < median_up * 1.5 + 0.002
    assert max(down) < 1.0
