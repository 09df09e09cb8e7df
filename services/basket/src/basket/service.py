"""Basket rules: whole-basket read-modify-write with optimistic concurrency and retries."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from basket.config import Settings
from basket.schemas import MAX_QUANTITY, Basket, BasketItem, BasketItemAdd
from basket.state import DaprSidecar, ETagInvalid, ETagMismatch
from eshop_common.problems import (
    BadRequest,
    Conflict,
    NotFound,
    PreconditionFailed,
    UnprocessableContent,
)


class BasketConflict(Conflict):
    type = "/problems/basket-conflict"


class ProductNotFound(BadRequest):
    type = "/problems/unknown-product"


class BasketLimitExceeded(UnprocessableContent):
    type = "/problems/basket-limit"


def state_key(buyer_id: str) -> str:
    # Dapr prefixes it with the app id: the stored key is `basket-api||<buyerId>`.
    return buyer_id


class BasketService:
    def __init__(self, sidecar: DaprSidecar, settings: Settings) -> None:
        self._sidecar = sidecar
        self._settings = settings

    async def get(self, buyer_id: str) -> tuple[Basket, str | None]:
        # Eventual is enough to show a basket: the next write checks the ETag anyway.
        entry = await self._sidecar.get_state(state_key(buyer_id), consistency="eventual")
        return self._basket(buyer_id, entry.value), entry.etag

    async def add_item(self, buyer_id: str, line: BasketItemAdd) -> Basket:
        (product,) = await self._products([line.product_id])

        def add(basket: Basket) -> Basket:
            for item in basket.items:
                if item.product_id == line.product_id:
                    item.quantity = self._checked_quantity(item.quantity + line.quantity)
                    _reprice(item, product)
                    return basket
            basket.items.append(_new_item(product, line.quantity))
            return basket

        return await self._update(buyer_id, add)

    async def set_quantity(self, buyer_id: str, product_id: int, quantity: int) -> Basket:
        def change(basket: Basket) -> Basket:
            _line(basket, product_id).quantity = quantity
            return basket

        return await self._update(buyer_id, change)

    async def remove_item(self, buyer_id: str, product_id: int) -> Basket:
        def remove(basket: Basket) -> Basket:
            basket.items.remove(_line(basket, product_id))
            return basket

        return await self._update(buyer_id, remove)

    async def replace(
        self, buyer_id: str, lines: list[BasketItemAdd], if_match: str | None
    ) -> Basket:
        ids = [line.product_id for line in lines]
        if len(set(ids)) != len(ids):
            raise UnprocessableContent(
                "items: a product may appear only once.",
                errors=[{"field": "items", "in": "body", "message": "duplicate productId"}],
            )
        self._check_lines(len(lines))
        products = {p["id"]: p for p in await self._products(ids)} if ids else {}
        basket = Basket(
            buyer_id=buyer_id,
            items=[_new_item(products[line.product_id], line.quantity) for line in lines],
        )
        if if_match is None:
            return await self._update(buyer_id, lambda _: basket)
        etag: str | None = if_match
        if if_match == "*":
            etag = (await self._sidecar.get_state(state_key(buyer_id), consistency="strong")).etag
            if etag is None:
                raise PreconditionFailed("If-Match: * needs an existing basket.")
        try:
            await self._save(buyer_id, basket, etag)
        except (ETagMismatch, ETagInvalid):
            raise PreconditionFailed(
                "The basket has changed since the version in If-Match; read it again."
            ) from None
        return basket

    async def delete(self, buyer_id: str, if_match: str | None) -> None:
        try:
            await self._sidecar.delete_state(state_key(buyer_id), etag=if_match)
        except (ETagMismatch, ETagInvalid):
            raise PreconditionFailed(
                "The basket has changed since the version in If-Match; read it again."
            ) from None

    async def _update(self, buyer_id: str, change: Callable[[Basket], Basket]) -> Basket:
        """Read, change, save with the ETag that was read; on a conflict, start over."""
        if not self._settings.basket_optimistic_concurrency:
            entry = await self._sidecar.get_state(state_key(buyer_id), consistency="strong")
            basket = change(self._basket(buyer_id, entry.value))
            await self._save(buyer_id, basket, None)
            return basket
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(ETagMismatch),
            stop=stop_after_attempt(self._settings.basket_conflict_attempts),
            wait=wait_random_exponential(multiplier=0.005, max=0.2),
        )
        try:
            async for attempt in retrying:
                with attempt:
                    # Strong: the ETag we save against must be the newest one.
                    entry = await self._sidecar.get_state(state_key(buyer_id), consistency="strong")
                    basket = change(self._basket(buyer_id, entry.value))
                    self._check_lines(len(basket.items))
                    await self._save(buyer_id, basket, entry.etag)
                    return basket
        except RetryError:
            pass
        raise BasketConflict(
            "The basket kept changing while this request tried to update it; try again."
        )

    async def _save(self, buyer_id: str, basket: Basket, etag: str | None) -> None:
        optimistic = self._settings.basket_optimistic_concurrency
        await self._sidecar.save_state(
            state_key(buyer_id),
            basket.model_dump(mode="json", by_alias=True, exclude_none=True),
            etag=etag if optimistic else None,
            concurrency="first-write" if optimistic else "last-write",
            consistency="strong",
            ttl_seconds=self._settings.basket_ttl_seconds,
        )

    async def _products(self, ids: list[int]) -> list[dict[str, Any]]:
        found = {p["id"]: p for p in await self._sidecar.catalog_items(ids)}
        missing = [i for i in ids if i not in found]
        if missing:
            raise ProductNotFound(
                f"productId: no product with id {', '.join(map(str, missing))} in the catalog.",
                errors=[{"field": "productId", "in": "body", "message": "unknown product"}],
            )
        return [found[i] for i in ids]

    def _basket(self, buyer_id: str, value: Any | None) -> Basket:
        if value is None:
            return Basket(buyer_id=buyer_id)
        return Basket.model_validate(value)

    def _check_lines(self, count: int) -> None:
        if count > self._settings.basket_max_lines:
            raise BasketLimitExceeded(
                f"items: a basket holds at most {self._settings.basket_max_lines} lines.",
                errors=[{"field": "items", "in": "body", "message": "too many lines"}],
            )

    @staticmethod
    def _checked_quantity(quantity: int) -> int:
        if quantity > MAX_QUANTITY:
            raise BasketLimitExceeded(
                f"quantity: at most {MAX_QUANTITY} of one product fit in a basket.",
                errors=[{"field": "quantity", "in": "body", "message": "quantity too large"}],
            )
        return quantity


def _line(basket: Basket, product_id: int) -> BasketItem:
    for item in basket.items:
        if item.product_id == product_id:
            return item
    raise NotFound(f"Product {product_id} is not in the basket.")


def _new_item(product: dict[str, Any], quantity: int) -> BasketItem:
    return BasketItem(
        product_id=product["id"],
        product_name=product["name"],
        unit_price=Decimal(str(product["price"])),
        quantity=quantity,
        picture_url=product.get("pictureUrl"),
    )


def _reprice(item: BasketItem, product: dict[str, Any]) -> None:
    price = Decimal(str(product["price"]))
    if price != item.unit_price:
        item.old_unit_price = item.unit_price
        item.unit_price = price
    item.product_name = product["name"]
