"""A save whose reply is lost: the store wrote it, the sidecar never heard back and retried it
under the same ETag, and that retry was refused as a conflict (an adversarial run saw this when
Redis was killed during writes: an add acknowledged once was applied twice). The service must
see that the stored basket is its own write and not apply the change again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx

from basket.config import Settings
from basket.schemas import BasketItemAdd, IdempotentReply, new_revision
from basket.service import BasketService, Saved, state_key
from basket.state import DaprSidecar, ETagMismatch, StateStoreUnavailable, StoreBreaker
from devstack.stack import DEMO_DAPR_API_TOKEN, DEMO_JWT_SECRET, Stack
from devstack.testkit import SHIPPING, checkout_events, unique_user
from eshop_common.auth import mint_token
from eshop_common.sidecar import Sidecar

S = TypeVar("S", bound=DaprSidecar)


@asynccontextmanager
async def basket_sidecar(stack: Stack, kind: type[S]) -> AsyncIterator[S]:
    """A `kind` of DaprSidecar on a client of its own to the basket's sidecar."""
    async with Sidecar(
        stack.dapr_url("basket-api"), owner="basket", api_token=DEMO_DAPR_API_TOKEN,
        timeout_seconds=5,
    ) as client:  # fmt: skip
        yield kind(
            client, store="statestore", catalog_app_id="catalog-api", pubsub="pubsub",
            breaker=StoreBreaker(5, 5),
        )  # fmt: skip


class SidecarThatRetriesLostReplies(DaprSidecar):
    """The real sidecar, with the first basket save sent twice under the same ETag, as the
    sidecar's retry policy does when the store wrote it and its reply was lost. The second send
    reaches the real store and is refused there (ETagMismatch)."""

    lost_replies = 1
    # What another replica does before the retry reaches the store: it saves after the write.
    meanwhile: Callable[[], Awaitable[Any]] | None = None

    async def save_state(self, key: str, value: Any, **options: Any) -> None:
        await super().save_state(key, value, **options)
        if self.lost_replies and not key.startswith(("idempotency:", "product-price:")):
            self.lost_replies -= 1
            if self.meanwhile is not None:
                await self.meanwhile()
            await super().save_state(key, value, **options)


async def add_once(
    stack: Stack,
    buyer: str,
    product_id: int,
    *,
    check_revision: bool,
    meanwhile: Callable[[], Awaitable[Any]] | None = None,
) -> int:
    settings = Settings()
    async with basket_sidecar(stack, SidecarThatRetriesLostReplies) as sidecar:
        sidecar.meanwhile = meanwhile
        service = BasketService(sidecar, settings)
        if not check_revision:  # the control: a read-modify-write that only retries conflicts
            service._read_modify_write = _blind_retry(service)  # type: ignore[method-assign]
        saved = await service.add_item(buyer, BasketItemAdd(productId=product_id, quantity=1))
        await service.close()
        return sum(item.quantity for item in saved.basket.items)


def _blind_retry(service: BasketService) -> Any:
    async def read_modify_write(buyer_id: str, change: Any, *_: Any) -> Any:
        while True:
            entry = await service._sidecar.get_state(state_key(buyer_id), consistency="strong")
            changed = change(service._basket(buyer_id, entry.value))
            changed.revision = new_revision()
            try:
                await service._save(changed, entry.etag)
                return Saved(changed)
            except ETagMismatch:
                continue

    return read_modify_write


def buyer_client(stack: Stack, buyer: str) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {mint_token(DEMO_JWT_SECRET, buyer)}"}
    return httpx.AsyncClient(base_url=stack.url("basket-api"), headers=headers, timeout=30)


def stored_quantity(stack: Stack, buyer: str) -> int:
    headers = {"Authorization": f"Bearer {mint_token(DEMO_JWT_SECRET, buyer)}"}
    basket = httpx.get(f"{stack.url('basket-api')}/api/basket", headers=headers).json()
    return sum(item["quantity"] for item in basket["items"])


def test_an_add_whose_save_reply_was_lost_is_applied_once(basket_stack: Stack, products) -> None:
    buyer = unique_user("lost-reply")
    asyncio.run(add_once(basket_stack, buyer, products[0]["id"], check_revision=True))
    asyncio.run(add_once(basket_stack, buyer, products[0]["id"], check_revision=True))
    assert stored_quantity(basket_stack, buyer) == 2


def test_control_a_loop_that_only_retries_conflicts_applies_it_twice(
    basket_stack: Stack, products
) -> None:
    buyer = unique_user("lost-reply-control")
    asyncio.run(add_once(basket_stack, buyer, products[0]["id"], check_revision=False))
    assert stored_quantity(basket_stack, buyer) == 2  # one add, applied twice


def test_an_add_whose_lost_reply_is_followed_by_another_replicas_add_is_applied_once(
    basket_stack: Stack, products
) -> None:
    """The stored basket is no longer this write's own: another replica saved after it. The
    basket's list of recent revisions still names it."""
    buyer = unique_user("lost-reply-then-add")

    async def other_replica_adds() -> None:
        async with buyer_client(basket_stack, buyer) as other:
            resp = await other.post("/api/basket/items", json={"productId": products[1]["id"]})
            assert resp.status_code == 200, resp.text

    asyncio.run(
        add_once(basket_stack, buyer, products[0]["id"], check_revision=True,
                 meanwhile=other_replica_adds)
    )  # fmt: skip
    assert stored_quantity(basket_stack, buyer) == 2


def test_an_add_whose_lost_reply_is_followed_by_a_checkout_is_ordered_once(
    basket_stack: Stack, products
) -> None:
    """The other tab checks the basket out, the added line with it, before the retry is
    refused: applying the add again would put it in a second order."""
    buyer = unique_user("lost-reply-then-checkout")
    orders: list[str] = []

    async def other_tab_checks_out() -> None:
        async with buyer_client(basket_stack, buyer) as other:
            resp = await other.post("/api/basket/checkout", json={"shipping": SHIPPING})
            assert resp.status_code == 202, resp.text
            orders.append(resp.json()["requestId"])

    asyncio.run(
        add_once(basket_stack, buyer, products[0]["id"], check_revision=True,
                 meanwhile=other_tab_checks_out)
    )  # fmt: skip
    assert stored_quantity(basket_stack, buyer) == 0
    (event,) = checkout_events(basket_stack, orders[0])
    assert [line["quantity"] for line in event["data"]["items"]] == [1]


class SidecarThatCannotKeepReplies(DaprSidecar):
    """The store goes away right after the request took effect, when its reply is to be kept
    under its Idempotency-Key."""

    async def save_state(self, key: str, value: Any, **options: Any) -> None:
        if key.startswith("idempotency:") and "reply" in value:
            raise StateStoreUnavailable("the store went away")
        await super().save_state(key, value, **options)


def test_an_add_whose_reply_cannot_be_kept_still_answers_its_success(
    basket_stack: Stack, products
) -> None:
    """The add is applied; failing to remember its reply must not turn it into a 503, which a
    client would retry as if nothing had happened."""
    buyer = unique_user("reply-not-kept")

    async def add_with_key() -> IdempotentReply:
        async with basket_sidecar(basket_stack, SidecarThatCannotKeepReplies) as sidecar:
            service = BasketService(sidecar, Settings())

            async def perform() -> IdempotentReply:
                saved = await service.add_item(
                    buyer, BasketItemAdd(productId=products[0]["id"], quantity=1)
                )
                return IdempotentReply(status=200, body={}, etag=saved.etag)

            reply = await service.idempotent(buyer, "k1", "fingerprint", perform)
            await service.close()
            return reply

    assert asyncio.run(add_with_key()).status == 200
    assert stored_quantity(basket_stack, buyer) == 1
