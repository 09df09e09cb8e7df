"""The lost-update experiment: many clients add to one basket at once, with and without ETags.

    uv run devstack lost-updates --basket http://localhost:5102 --sidecar http://localhost:3502

The unsafe variant is the same basket code in a second process on the same sidecar, started with
BASKET_OPTIMISTIC_CONCURRENCY=false (saves last-write-wins, no ETag). The tests use the same
functions, so the figures in docs/ are the ones the test suite checks.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from devstack.procs import die_with_parent, free_port, wait_until
from devstack.stack import DEMO_DAPR_API_TOKEN, DEMO_JWT_SECRET, REPO_ROOT


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


def quantity_in_basket(basket_url: str, user: str, product_id: int) -> int:
    headers = {"Authorization": f"Bearer {_token(user)}"}
    basket = httpx.get(f"{basket_url}/api/basket", headers=headers).raise_for_status().json()
    return sum(i["quantity"] for i in basket["items"] if i["productId"] == product_id)


@dataclass(frozen=True)
class Outcome:
    accepted: int  # adds the API answered 200 to
    kept: int  # what the basket holds afterwards


def run(basket_url: str, product_id: int, clients: int) -> Outcome:
    # One add first, for another buyer: it opens the process's connections to its sidecar and
    # the sidecar's to the catalog, which would otherwise spread the race's first requests out.
    asyncio.run(add_concurrently(basket_url, f"warm-up-{uuid.uuid4().hex[:10]}", product_id, 1))
    user = f"experiment-{uuid.uuid4().hex[:10]}"
    statuses = asyncio.run(add_concurrently(basket_url, user, product_id, clients))
    return Outcome(statuses.count(200), quantity_in_basket(basket_url, user, product_id))


@contextmanager
def unsafe_basket(sidecar_url: str) -> Iterator[str]:
    """A basket process that saves without ETags, beside the real one, on the same sidecar."""
    port = free_port()
    env = {
        **os.environ,
        "APP_PORT": str(port),
        "DAPR_HTTP_PORT": sidecar_url.rsplit(":", 1)[1],
        "DAPR_API_TOKEN": os.environ.get("DAPR_API_TOKEN", DEMO_DAPR_API_TOKEN),
        "BASKET_OPTIMISTIC_CONCURRENCY": "false",
    }
    proc = subprocess.Popen(
        ["uv", "run", "--no-sync", "serve", "basket.main:app"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout=60, what="the unsafe basket process")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def report(basket_url: str, sidecar_url: str, product_id: int, clients: int) -> None:
    print(f"{clients} clients at once, each adding 1 of product {product_id} to one new basket")
    safe = run(basket_url, product_id, clients)
    print(f"with ETags (first-write, retry on 409): {safe.accepted} accepted, {safe.kept} kept")
    with unsafe_basket(sidecar_url) as url:
        unsafe = run(url, product_id, clients)
    lost = unsafe.accepted - unsafe.kept
    print(
        f"without ETags (last-write-wins): {unsafe.accepted} accepted, {unsafe.kept} kept, "
        f"{lost} lost"
    )
