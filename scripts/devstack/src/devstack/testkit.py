"""Helpers for tests that talk to the running services over HTTP."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import redis
from aiohttp import web

from devstack.stack import DEMO_DAPR_API_TOKEN, DEMO_JWT_SECRET, Stack

PROBLEM_JSON = "application/problem+json"
# A valid checkout address (the basket's Shipping schema), for tests that check out.
SHIPPING = {
    "fullName": "Ada Lovelace", "street": "12 Example Road", "city": "Springfield",
    "postalCode": "12345", "country": "Utopia",
}  # fmt: skip


def unique_user(prefix: str = "buyer") -> str:
    """A fresh user id per test, so tests never share a basket and need no cleanup."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def eventually(check: Callable[[], Any], timeout: float = 20, what: str = "") -> Any:
    """Poll `check()` every 0.2 s until it is truthy and return it; fail naming `what` after
    `timeout` seconds. Events arrive asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            assert result, f"not within {timeout}s: {what}"
            return result
        time.sleep(0.2)


def quantities(basket: dict[str, Any]) -> dict[int, int]:
    return {item["productId"]: item["quantity"] for item in basket["items"]}


def assert_problem(resp: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    """The response is an RFC 9457 problem with `status`, naming `field` when given."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM_JSON), resp.headers
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    assert body["title"]
    if field is not None:
        assert field in body.get("detail", ""), body
    return body


def new_product(stack: Stack, *, stock: int = 10, price: float = 20.0) -> dict[str, Any]:
    """A catalog item of the test's own, so no other test moves its stock."""
    from eshop_common.auth import mint_token

    token = mint_token(DEMO_JWT_SECRET, "admin", admin=True)
    with httpx.Client(
        base_url=stack.url("catalog-api"), headers={"Authorization": f"Bearer {token}"}
    ) as admin:
        brand = admin.get("/api/catalog/brands").json()[0]
        kind = admin.get("/api/catalog/types").json()[0]
        resp = admin.post(
            "/api/catalog/items",
            json={
                "name": f"Basket test item {uuid.uuid4().hex[:10]}",
                "price": price,
                "catalogBrandId": brand["id"],
                "catalogTypeId": kind["id"],
                "availableStock": stock,
            },
        )
    assert resp.status_code == 201, resp.text
    item: dict[str, Any] = resp.json()
    return item


MERGE_PATCH = "application/merge-patch+json"


def patch_item(
    catalog_url: str,
    item_id: int,
    changes: dict[str, Any],
    *,
    etag: str | None = None,
    user: str = "admin",
) -> httpx.Response:
    """Change some of an item's fields as an admin does: a JSON merge patch under If-Match with
    `etag`, or with the ETag of a GET just before when none is given."""
    from eshop_common.auth import mint_token

    url = f"{catalog_url}/api/catalog/items/{item_id}"
    if etag is None:
        etag = httpx.get(url).headers["etag"]
    token = mint_token(DEMO_JWT_SECRET, user, admin=True)
    headers = {"Authorization": f"Bearer {token}", "If-Match": etag, "Content-Type": MERGE_PATCH}
    return httpx.patch(url, content=json.dumps(changes), headers=headers)


def stock_of(stack: Stack, item_id: int) -> int:
    resp = httpx.get(f"{stack.url('catalog-api')}/api/catalog/items/{item_id}")
    return int(resp.json()["availableStock"])


def published_events(stack: Stack, topic: str) -> list[dict[str, Any]]:
    """Every CloudEvent published on `topic`, oldest first, read straight from the Redis stream
    the pubsub component keeps per topic. A message that is not a JSON object (a raw payload
    published past the CloudEvents envelope) is left out."""
    assert stack.redis_url is not None
    store = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    entries: list[tuple[str, dict[str, str]]] = store.xrange(topic)  # type: ignore[assignment]
    events = []
    for _, fields in entries:
        try:
            event = json.loads(fields["data"])
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def checkout_events(stack: Stack, request_id: str) -> list[dict[str, Any]]:
    """The UserCheckoutAccepted CloudEvents published with id `request_id` (a repeat of an
    event is published with its id again; the catalog handles it once)."""
    return [e for e in published_events(stack, "user-checkout-accepted") if e["id"] == request_id]


def sidecar_state(stack: Stack, app_id: str = "basket-api") -> httpx.Client:
    """A client for the app's state store through its sidecar's state API (with the sidecar's
    API token): what the service itself sees, keys without the app-id prefix."""
    return httpx.Client(
        base_url=f"{stack.dapr_url(app_id)}/v1.0/state/statestore",
        headers={"dapr-api-token": DEMO_DAPR_API_TOKEN}, timeout=10,
    )  # fmt: skip


def store_entry(stack: Stack, key: str, value: Any, app_id: str = "basket-api") -> None:
    """Save `value` under `key` straight through the app's sidecar, past the service: what a
    test that plants a stored value (odd, old or newer than the service wrote) needs."""
    with sidecar_state(stack, app_id) as state:
        resp = state.post("", json=[{"key": key, "value": value}])
    assert resp.status_code == 204, resp.text


T = TypeVar("T")


def run_with(client: Any, use: Callable[[Any], Awaitable[T]]) -> T:
    """Open `client` (an async context manager, such as eshop_common's Sidecar), run `use` on it
    and close it, on an event loop of its own."""

    async def main() -> T:
        async with client:
            return await use(client)

    return asyncio.run(main())


async def fake_sidecar(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> tuple[web.AppRunner, str]:
    """An HTTP server on a free loopback port that answers every request with `handler`: a
    sidecar that misbehaves on purpose. Returns its runner (clean it up) and base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"
