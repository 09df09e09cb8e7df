"""Traces and metrics through the whole stack, read back from the real backends: Jaeger's query
API (/api/traces) and Prometheus' (/api/v1/targets, /api/v1/query). Runs against the local
stack and, through E2E_JAEGER_URL and E2E_PROMETHEUS_URL, against compose.

Each traced request carries a traceparent of the test's own (a traced client's), so the test
reads exactly its own trace back; `test_the_trace_is_found_by_service` shows the same trace is
what a search by service finds."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devstack.testkit import eventually
from devstack.traces import Jaeger, Span, Trace, new_traceparent
from eshop_common.auth import mint_token

from .conftest import Target

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
SHIPPING_FORM = {
    "full_name": "Ada Lovelace",
    "street": "12 Example Road",
    "city": "Springfield",
    "postal_code": "12345",
    "country": "Utopia",
}


@pytest.fixture(scope="module")
def jaeger(target: Target) -> Jaeger:
    if not target.jaeger_url:
        pytest.fail("no trace backend: the stack runs without Jaeger (set E2E_JAEGER_URL)")
    return Jaeger(target.jaeger_url)


class Shopper:
    """The storefront driven as a browser drives it: forms with their CSRF field, cookies."""

    def __init__(self, web_url: str) -> None:
        self.http = httpx.Client(base_url=web_url, timeout=30)
        page = self.http.get("/signin")
        resp = self.http.post(
            "/signin",
            data={"csrf_token": _csrf(page), "user_name": f"tracer-{uuid.uuid4().hex[:10]}"},
        )
        assert resp.status_code == 303, resp.text

    def add(self, product_id: int, quantity: int = 1, traceparent: str | None = None) -> None:
        page = self.http.get(f"/items/{product_id}")
        headers = {"traceparent": traceparent} if traceparent else {}
        resp = self.http.post(
            "/basket/items",
            data={"csrf_token": _csrf(page), "product_id": str(product_id),
                  "quantity": str(quantity)},
            headers=headers,
        )  # fmt: skip
        assert resp.status_code == 303, resp.text
        assert "error" not in resp.headers["location"], resp.headers["location"]

    def check_out(self, traceparent: str) -> str:
        page = self.http.get("/checkout")
        key = re.search(r'name="idempotency_key" value="([^"]+)"', page.text)
        assert key is not None, page.text[:500]
        resp = self.http.post(
            "/checkout",
            data={"csrf_token": _csrf(page), "idempotency_key": key[1], **SHIPPING_FORM},
            headers={"traceparent": traceparent},
        )
        assert resp.status_code == 303, resp.text
        return resp.headers["location"]


def _csrf(page: httpx.Response) -> str:
    match = CSRF.search(page.text)
    assert match, page.text[:500]
    return match[1]


@pytest.fixture
def shopper(target: Target) -> Iterator[Shopper]:
    assert target.web_url, "the storefront's URL is needed (E2E_WEB_URL)"
    shopper = Shopper(target.web_url)
    yield shopper
    shopper.http.close()


def admin(target: Target) -> httpx.Client:
    token = mint_token(target.jwt_secret, "trace-admin", admin=True)
    return httpx.Client(
        base_url=target.catalog_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def new_product(target: Target, stock: int = 50) -> dict[str, Any]:
    with admin(target) as client:
        brand = client.get("/api/catalog/brands").json()[0]
        kind = client.get("/api/catalog/types").json()[0]
        resp = client.post(
            "/api/catalog/items",
            json={"name": f"Traced lantern {uuid.uuid4().hex[:10]}", "description": "traced",
                  "price": 12.5, "pictureFileName": "northwind-camp-lantern.svg",
                  "catalogBrandId": brand["id"], "catalogTypeId": kind["id"],
                  "availableStock": stock},
        )  # fmt: skip
    assert resp.status_code == 201, resp.text
    item: dict[str, Any] = resp.json()
    return item


def is_sql(span: Span) -> bool:
    return span.tags.get("db.system") == "postgresql" and "db.statement" in span.tags


def is_state_call(span: Span) -> bool:
    return span.from_sidecar and span.tags.get("db.system") == "state"


def chain(trace: Trace, span: Span) -> list[tuple[str, str]]:
    """(service, operation) from `span` up to the trace's root, nearest first."""
    return [(s.service, s.operation) for s in trace.ancestors(span)]


# -- one basket write -----------------------------------------------------------------------
def connected(trace: Trace, service: str, operation: str) -> bool:
    """The request's span has arrived, and every span that others hang from: the trace is one
    tree under it. (Each process exports in its own time: the sidecars every few seconds.)"""
    roots = trace.roots()
    return len(roots) == 1 and (roots[0].service, roots[0].operation) == (service, operation)


def add_is_complete(trace: Trace) -> bool:
    return (
        connected(trace, "webshop", "POST /basket/items")
        and bool(trace.find("catalog-api", "SELECT", where=is_sql))
        and bool(trace.find("basket-api", "/v1.0/state/statestore", where=lambda s: "POST" in str(
            s.tags.get("dapr.api"))))
    )  # fmt: skip


def test_adding_an_item_from_the_storefront_is_one_trace_from_the_page_down_to_the_sql(
    jaeger: Jaeger, shopper: Shopper
):
    trace_id, traceparent = new_traceparent()
    shopper.add(1, 2, traceparent)
    trace = jaeger.wait_for(trace_id, add_is_complete)

    # One tree: every span but the storefront's route hangs under another span of this trace.
    page = trace.one("webshop", "POST /basket/items", where=lambda s: s.kind == "server")
    assert trace.roots() == [page], trace.outline()

    # The storefront's sidecar invokes the basket; the basket's sidecar hands it to the route.
    invoke = trace.one("webshop", "CallLocal/basket-api/api/basket/items")
    assert invoke.from_sidecar
    assert invoke.kind == "client"
    route = trace.one("basket-api", "POST /api/basket/items", where=lambda s: s.kind == "server")
    received = trace.one("basket-api", "CallLocal/basket-api/api/basket/items")
    assert received.kind == "server"
    assert received.from_sidecar
    assert ("basket-api", received.operation) == chain(trace, route)[0]
    assert ("webshop", invoke.operation) in chain(trace, route)

    # The basket's sidecar reads and saves the basket in the state store, inside the route.
    state = trace.find("basket-api", "/v1.0/state/statestore", where=is_state_call)
    assert {str(s.tags["dapr.api"]).split()[0] for s in state} >= {"GET", "POST"}, trace.outline()
    for call in state:
        assert ("basket-api", route.operation) in chain(trace, call)

    # The catalog lookup, by invocation, down to its SQL.
    sql = trace.one("catalog-api", "SELECT", where=is_sql)
    assert "catalog_item" in sql.tags["db.statement"]
    up = chain(trace, sql)
    assert up[0] == ("catalog-api", "GET /api/catalog/items/by-ids")
    assert ("catalog-api", "CallLocal/catalog-api/api/catalog/items/by-ids") in up
    assert ("basket-api", "CallLocal/catalog-api/api/catalog/items/by-ids") in up
    assert ("basket-api", route.operation) in up
    assert up[-1] == ("webshop", page.operation)


def test_the_trace_is_found_by_service(jaeger: Jaeger, shopper: Shopper):
    since = time.time() - 1
    trace_id, traceparent = new_traceparent()
    shopper.add(2, 1, traceparent)
    jaeger.wait_for(trace_id, add_is_complete)
    for service in ("webshop", "basket-api", "catalog-api"):
        found = jaeger.search(service, since=since, limit=100)
        assert trace_id in {t.trace_id for t in found}, service


# -- checkout and price changes: traces that cross pub/sub -----------------------------------
def test_a_checkouts_trace_continues_into_the_catalogs_handler_and_its_stock_transaction(
    jaeger: Jaeger, shopper: Shopper, target: Target
):
    product = new_product(target)
    shopper.add(product["id"], 2)
    trace_id, traceparent = new_traceparent()
    shopper.check_out(traceparent)

    def reserved(trace: Trace) -> bool:
        return connected(trace, "webshop", "POST /checkout") and bool(
            trace.find("basket-api", "POST /events/stock-reserved")
        )

    trace = jaeger.wait_for(trace_id, reserved)
    publish = trace.one("basket-api", "/v1.0/publish/pubsub/user-checkout-accepted")
    assert publish.from_sidecar
    handler = trace.one("catalog-api", "POST /events/user-checkout-accepted")
    delivery = chain(trace, handler)
    assert delivery[0] == ("catalog-api", "pubsub/user-checkout-accepted")
    assert ("basket-api", publish.operation) in delivery
    assert ("basket-api", "POST /api/basket/checkout") in delivery
    assert delivery[-1] == ("webshop", "POST /checkout")
    # The stock transaction: the reservation's UPDATE inside the handler.
    updates = trace.find("catalog-api", "UPDATE", where=is_sql)
    assert any("available_stock" in s.tags["db.statement"] for s in updates), trace.outline()
    for update in updates:
        assert ("catalog-api", handler.operation) in chain(trace, update)
    # And on, through the catalog's outbox, to the basket recording the reservation.
    recorded = trace.one("basket-api", "POST /events/stock-reserved")
    back = chain(trace, recorded)
    assert ("catalog-api", "stock-reserved publish") in back
    assert ("catalog-api", handler.operation) in back


def test_a_price_changes_trace_runs_from_the_admin_request_through_the_outbox_to_the_basket(
    jaeger: Jaeger, target: Target
):
    product = new_product(target)
    trace_id, traceparent = new_traceparent()
    with admin(target) as client:
        read = client.get(f"/api/catalog/items/{product['id']}")
        resp = client.patch(
            f"/api/catalog/items/{product['id']}",
            json={"price": 13.75},
            headers={"If-Match": read.headers["etag"], "traceparent": traceparent,
                     "Content-Type": "application/merge-patch+json"},
        )  # fmt: skip
    assert resp.status_code == 200, resp.text

    def delivered(trace: Trace) -> bool:
        return connected(trace, "catalog-api", "PATCH /api/catalog/items/{item_id:int}") and bool(
            trace.find("basket-api", "POST /events/product-price-changed")
        )

    trace = jaeger.wait_for(trace_id, delivered)
    request = trace.one("catalog-api", "PATCH /api/catalog/items/")
    assert trace.roots() == [request], trace.outline()
    # The outbox row was written in the request; the relay published it later, from another
    # thread, in the request's trace.
    outbox_write = trace.find(
        "catalog-api", "INSERT", where=lambda s: is_sql(s) and "outbox_message" in s.tags[
            "db.statement"]
    )  # fmt: skip
    assert outbox_write, trace.outline()
    relay = trace.one("catalog-api", "product-price-changed publish")
    assert relay.kind == "producer"
    assert relay.start_us >= outbox_write[0].start_us
    handler = trace.one("basket-api", "POST /events/product-price-changed")
    path = chain(trace, handler)
    assert path[0] == ("basket-api", "pubsub/product-price-changed")
    assert ("catalog-api", "/v1.0/publish/pubsub/product-price-changed") in path
    assert ("catalog-api", relay.operation) in path
    assert path[-1] == ("catalog-api", request.operation)


# -- metrics ----------------------------------------------------------------------------------
APPS = {"catalog-api": "catalog_url", "basket-api": "basket_url", "webshop": "web_url"}


@pytest.mark.parametrize("app_id", list(APPS))
def test_each_app_serves_its_request_metrics_in_prometheus_format(target: Target, app_id: str):
    url = getattr(target, APPS[app_id])
    httpx.get(f"{url}/healthz", timeout=10)
    resp = httpx.get(f"{url}/metrics", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert 'http_server_request_duration_seconds_count{method="GET",route="/healthz"' in resp.text


def test_the_basket_and_catalog_metrics_are_named_as_prometheus_asks(target: Target):
    basket = httpx.get(f"{target.basket_url}/metrics", timeout=10).text
    for name in ("basket_etag_conflicts_total", "basket_write_retries_total",
                 "basket_checkouts_total", "basket_checkout_results_total"):  # fmt: skip
        assert f"# TYPE {name} counter" in basket, name
    assert "_created" not in basket  # one series a counter, not two
    catalog = httpx.get(f"{target.catalog_url}/metrics", timeout=10).text
    assert re.search(r"^catalog_outbox_unsent_events \d", catalog, re.M), catalog[-2000:]
    assert re.search(r"^catalog_outbox_oldest_unsent_age_seconds \d", catalog, re.M)


def test_prometheus_scrapes_every_app_and_every_sidecar(target: Target):
    assert target.prometheus_url, "no Prometheus (set E2E_PROMETHEUS_URL)"

    def all_up() -> list[dict[str, Any]] | None:
        resp = httpx.get(f"{target.prometheus_url}/api/v1/targets", timeout=10)
        active = resp.json()["data"]["activeTargets"]
        healthy = [t for t in active if t["health"] == "up"]
        return active if len(healthy) == len(active) == 2 * len(APPS) else None

    active = eventually(all_up, timeout=60, what="every target up")
    scraped = {(t["labels"]["job"], t["labels"]["app_id"]) for t in active}
    assert scraped == {(job, app) for job in ("eshop-app", "daprd") for app in APPS}

    def sidecar_series() -> Any:
        resp = httpx.get(
            f"{target.prometheus_url}/api/v1/query",
            params={"query": "count by (app_id) (dapr_http_server_request_count)"},
            timeout=10,
        )
        return {r["metric"]["app_id"] for r in resp.json()["data"]["result"]} >= set(APPS)

    eventually(sidecar_series, timeout=30, what="the sidecars' request counts in Prometheus")
