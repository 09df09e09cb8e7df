"""The basket's product lookups (basket.state.DaprSidecar.catalog_items) name the hop that
failed: a catalog that is slow, hung or answers something other than JSON items is
`/problems/catalog-unavailable` (docs/08-resilience.md, "What the basket does when something is
down"), never the sidecar's problem and never a 500. Found by an adversarial review; each test
failed before its fix."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from aiohttp import web

from basket.state import CatalogUnavailable, DaprSidecar, StoreBreaker
from devstack.stack import Stack
from devstack.testkit import fake_sidecar
from devstack.testkit import unique_user as buyer
from eshop_common.problems import ServiceUnavailable
from eshop_common.sidecar import Sidecar


def _catalog_lookup_error(handler, timeout: float) -> BaseException | None:  # type: ignore[no-untyped-def]
    async def main() -> BaseException | None:
        runner, url = await fake_sidecar(handler)
        try:
            async with Sidecar(url, owner="basket", timeout_seconds=timeout) as client:
                dapr = DaprSidecar(
                    client, store="statestore", catalog_app_id="catalog-api", pubsub="pubsub",
                    breaker=StoreBreaker(5, 5),
                )  # fmt: skip
                try:
                    await dapr.catalog_items([1, 2])
                except BaseException as exc:
                    return exc
                return None
        finally:
            await runner.cleanup()

    return asyncio.run(main())


def test_a_catalog_slower_than_the_client_timeout_is_catalog_unavailable() -> None:
    """The sidecar is there and answers its own API; the catalog behind the invocation is slow
    (the basket's resiliency policy for catalog-api, a 2 s timeout with 3 retries, can take
    ~10 s in all, longer than the basket's 5 s client timeout). Before the fix the client's
    timeout came through as "The basket's Dapr sidecar did not answer in time"
    (`/problems/sidecar-unavailable`), blaming a sidecar that was up."""

    async def slow_catalog(request: web.Request) -> web.Response:
        if request.path.startswith("/v1.0/invoke/"):
            await asyncio.sleep(3)
        return web.json_response([])

    error = _catalog_lookup_error(slow_catalog, timeout=0.5)
    assert isinstance(error, CatalogUnavailable), repr(error)


def test_a_catalog_answer_that_is_not_json_is_catalog_unavailable() -> None:
    """catalog_items raises CatalogUnavailable or SidecarUnavailable (503) only. A 200 whose
    body is not JSON (an HTML page from something in between) escaped as JSONDecodeError: a
    bare 500 for the basket's client."""

    async def html(request: web.Request) -> web.Response:
        return web.Response(status=200, text="<html>maintenance</html>", content_type="text/html")

    error = _catalog_lookup_error(html, timeout=2)
    assert isinstance(error, ServiceUnavailable), repr(error)


@pytest.fixture
def catalog_paused(basket_stack: Stack):  # type: ignore[no-untyped-def]
    """The catalog app (not its sidecar) stops answering: SIGSTOP, resumed afterwards."""
    pid = basket_stack.procs["catalog-api"].popen.pid
    os.killpg(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(pid, signal.SIGCONT)


def test_a_hung_catalog_reads_as_catalog_unavailable_to_a_client(
    basket_stack: Stack, as_user, products, catalog_paused
) -> None:
    """docs/08-resilience.md, "What the basket does when something is down": the catalog
    failing while adding an item gives `503 /problems/catalog-unavailable`, here with the
    catalog app hung (SIGSTOP) and its sidecar up and ready."""
    client = as_user(buyer())
    started = time.monotonic()
    resp = client.post("/api/basket/items", json={"productId": products[-1]["id"], "quantity": 1})
    took = time.monotonic() - started
    assert resp.status_code == 503, resp.text
    assert resp.json()["type"] == "/problems/catalog-unavailable", (took, resp.json())
