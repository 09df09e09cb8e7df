"""The lost-update experiment: many clients add to one basket at once, with and without ETags.

    uv run devstack lost-updates --basket http://localhost:5102 --sidecar http://localhost:3502

The safe run goes through the basket API. The unsafe control is built here, not in the service:
the same read-modify-write straight against the basket's sidecar, saving last-write-wins without
an ETag, the way most samples do. The tests use the same functions, so the figures in docs/ are the
ones the test suite checks.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from devstack.stack import DEMO_DAPR_API_TOKEN, DEMO_JWT_SECRET


def _token(user: str) -> str:
    from eshop_common.auth import mint_token

    return mint_token(DEMO_JWT_SECRET, user)


async def add_concurrently(basket_url: str, user: str, product_id: int, clients: int) -> list[int]:
    """`clients` requests at once, each adding 1 of `product_id` to `user`'s basket."""
    headers = {"Authorization": f"Bearer {_token(user)}"}
    async with httpx.AsyncClient(base_url=basket_url, headers=headers, timeout=30) as http:
        responses = await asyncio.gather(
            *(
                http.post("/api/basket/items", json={"productId": product_id, "quantity": 1})
                for _ in range(clients)
            )
        )
    return [r.status_code for r in responses]


def sidecar_client(sidecar_url: str) -> httpx.AsyncClient:
    token = os.environ.get("DAPR_API_TOKEN", DEMO_DAPR_API_TOKEN)
    return httpx.AsyncClient(base_url=sidecar_url, headers={"dapr-api-token": token}, timeout=30)


async def add_without_etags(sidecar_url: str, user: str, product_id: int, clients: int) -> int:
    """The control: `clients` read-modify-writes at once on `user`'s basket, each reading the
    stored basket, adding 1 of `product_id`, and saving last-write-wins without an ETag.
    Returns how many saves the store accepted."""
    async with sidecar_client(sidecar_url) as dapr:
        product = (
            await dapr.get(f"/v1.0/invoke/catalog-api/method/api/catalog/items/{product_id}")
        ).raise_for_status().json()  # fmt: skip

        async def add_one() -> bool:
            resp = await dapr.get(f"/v1.0/state/statestore/{user}")
            basket: dict[str, Any] = resp.json() if resp.status_code == 200 else {}
            basket.setdefault("buyerId", user)
            items = basket.setdefault("items", [])
            line = next((i for i in items if i["productId"] == product_id), None)
            if line is None:
                items.append(
                    {"productId": product_id, "productName": product["name"],
                     "unitPrice": product["price"], "quantity": 1}
                )  # fmt: skip
            else:
                line["quantity"] += 1
            saved = await dapr.post("/v1.0/state/statestore", json=[{"key": user, "value": basket}])
            return saved.status_code in (200, 204)

        results = await asyncio.gather(*(add_one() for _ in range(clients)))
    return sum(results)


def quantity_in_basket(basket_url: str, user: str, product_id: int) -> int:
    headers = {"Authorization": f"Bearer {_token(user)}"}
    basket = httpx.get(f"{basket_url}/api/basket", headers=headers).raise_for_status().json()
    return sum(i["quantity"] for i in basket["items"] if i["productId"] == product_id)


@dataclass(frozen=True)
class Outcome:
    accepted: int  # adds the API (or, for the control, the store) said yes to
    kept: int  # what the basket holds afterwards


def _warm_up(basket_url: str, product_id: int) -> None:
    # One add first, for another buyer: it opens the process's connections to its sidecar and
    # the sidecar's to the catalog, which would otherwise spread the race's first requests out.
    asyncio.run(add_concurrently(basket_url, f"warm-up-{uuid.uuid4().hex[:10]}", product_id, 1))


def run(basket_url: str, product_id: int, clients: int) -> Outcome:
    """Through the basket API: every add is a read-modify-write saved under its ETag."""
    _warm_up(basket_url, product_id)
    user = f"experiment-{uuid.uuid4().hex[:10]}"
    statuses = asyncio.run(add_concurrently(basket_url, user, product_id, clients))
    return Outcome(statuses.count(200), quantity_in_basket(basket_url, user, product_id))


def run_without_etags(basket_url: str, sidecar_url: str, product_id: int, clients: int) -> Outcome:
    """The control: the same adds saved last-write-wins straight through the sidecar."""
    _warm_up(basket_url, product_id)
    user = f"experiment-{uuid.uuid4().hex[:10]}"
    accepted = asyncio.run(add_without_etags(sidecar_url, user, product_id, clients))
    return Outcome(accepted, quantity_in_basket(basket_url, user, product_id))


def report(basket_url: str, sidecar_url: str, product_id: int, clients: int) -> None:
    print(f"{clients} clients at once, each adding 1 of product {product_id} to one new basket")
    safe = run(basket_url, product_id, clients)
    print(f"with ETags (first-write, retry on 409): {safe.accepted} accepted, {safe.kept} kept")
    unsafe = run_without_etags(basket_url, sidecar_url, product_id, clients)
    lost = unsafe.accepted - unsafe.kept
    print(
        f"without ETags (last-write-wins): {unsafe.accepted} accepted, {unsafe.kept} kept, "
        f"{lost} lost"
    )
