"""Jaeger's own UI showing the storefront's traces: a basket write and a checkout, as a person
reads them in the trace view. Screenshots go to docs/screenshots/ (docs/11-observability.md).

The UI is the jaeger-ui build that Jaeger serves. The binary built from the Go module has none
(upstream embeds it at release time), so where no built UI is installed
(scripts/install-jaeger-ui) these tests are skipped and say so; the traces themselves are
checked through the query API in tests/e2e/test_observability.py either way."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import httpx
import pytest
from playwright.sync_api import Page, expect

from devstack.traces import Jaeger, Trace

from .conftest import VIEWPORT, Storefront
from .test_storefront import fill_shipping

VIEWPORT_WIDTH = VIEWPORT["width"]


@pytest.fixture(scope="module")
def jaeger_ui(request: pytest.FixtureRequest) -> str:
    url = os.environ.get("E2E_JAEGER_URL")
    if not url:
        stack = request.getfixturevalue("stack")
        assert stack.jaeger is not None, "the test stack runs without Jaeger"
        url = stack.jaeger.url
    home = httpx.get(f"{url}/search", timeout=10).text
    if "placeholder for the Jaeger UI" in home:
        pytest.skip(
            "Jaeger serves no UI here: its Go module build has none and no built jaeger-ui is "
            "installed (scripts/install-jaeger-ui)"
        )
    return url.rstrip("/")


def newest_trace(
    jaeger: Jaeger, operation: str, since: float, done: Callable[[Trace], bool]
) -> Trace:
    """The newest trace of a storefront route since `since`, once `done` holds for it."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = jaeger.search("webshop", operation=operation, since=since, limit=5)
        for trace in found:
            if done(trace):
                return trace
        time.sleep(0.5)
    raise AssertionError(f"no complete trace of {operation} since {since}")


def show_trace(page: Page, jaeger_ui: str, trace: Trace) -> None:
    """The trace view, with every span the query API returned and each service's rows."""
    page.goto(f"{jaeger_ui}/trace/{trace.trace_id}")
    header = page.locator(".TracePageHeader")
    expect(header).to_contain_text(f"Total Spans{len(trace.spans)}")
    expect(header).to_contain_text(f"Services{len({s.service for s in trace.spans})}")
    for service in ("webshop", "basket-api", "catalog-api"):
        expect(page.locator(".TraceTimelineViewer")).to_contain_text(service)
    # Widen the operations column, as a reader would, so the sidecars' span names show.
    dragger = page.locator(".TimelineHeaderRow .VerticalResizer--dragger")
    box = dragger.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(VIEWPORT_WIDTH * 0.5, y, steps=5)
    page.mouse.up()
    page.wait_for_timeout(500)  # the span bars are laid out again


def test_the_trace_of_a_basket_write_in_jaegers_trace_view(
    new_page, storefront: Storefront, jaeger_ui: str
):
    jaeger = Jaeger(jaeger_ui)
    shop = new_page()
    storefront.sign_in(shop, f"tracer-{int(time.time() * 1000)}")
    since = time.time() - 1
    shop.goto("/items/1")
    shop.get_by_role("button", name="Add to basket").click()
    expect(shop.get_by_role("status")).to_contain_text("Added")

    def complete(trace: Trace) -> bool:
        return bool(trace.find("catalog-api", "SELECT")) and len(trace.roots()) == 1

    trace = newest_trace(jaeger, "POST /basket/items", since, complete)
    view = new_page()
    show_trace(view, jaeger_ui, trace)
    storefront.screenshot(view, "trace-basket-add")


def test_the_trace_of_a_checkout_in_jaegers_trace_view(
    new_page, storefront: Storefront, jaeger_ui: str
):
    jaeger = Jaeger(jaeger_ui)
    item = storefront.new_product(stock=20)
    shop = new_page()
    storefront.sign_in(shop, f"checkout-tracer-{int(time.time() * 1000)}")
    shop.goto(f"/items/{item['id']}")
    shop.get_by_role("button", name="Add to basket").click()
    since = time.time() - 1
    shop.goto("/checkout")
    fill_shipping(shop)
    shop.get_by_role("button", name="Place order").click()

    def complete(trace: Trace) -> bool:
        return bool(trace.find("basket-api", "POST /events/stock-reserved")) and (
            len(trace.roots()) == 1
        )

    trace = newest_trace(jaeger, "POST /checkout", since, complete)
    view = new_page()
    show_trace(view, jaeger_ui, trace)
    storefront.screenshot(view, "trace-checkout")
    search = new_page()
    search.goto(f"{jaeger_ui}/search?service=webshop&limit=20")
    expect(search.get_by_text("POST /checkout").first).to_be_visible()
    storefront.screenshot(search, "traces-search", full_page=False)
