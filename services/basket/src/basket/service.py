"""Basket rules: whole-basket read-modify-write with optimistic concurrency and retries."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4, uuid5

from pydantic import BaseModel
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from basket.config import Settings
from basket.schemas import (
    MAX_QUANTITY,
    Basket,
    BasketItem,
    BasketItemAdd,
    CheckoutLine,
    ProductPrice,
    ProductPriceChanged,
    Shipping,
    UserCheckoutAccepted,
)
from basket.state import DaprSidecar, ETagInvalid, ETagMismatch, StateEntry
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


class EmptyBasket(BadRequest):
    type = "/problems/empty-basket"


CHECKOUT_TOPIC = "user-checkout-accepted"
CHECKOUT_NAMESPACE = UUID("0b8f3c52-6f0e-4f57-9d7e-2c1c5cbb7a11")


def state_key(buyer_id: str) -> str:
    # Dapr prefixes it with the app id: the stored key is `basket-api||<buyerId>`.
    return buyer_id


def price_key(product_id: int) -> str:
    # Buyer ids never contain ':' (see api.py), so no buyer's basket can take this key.
    return f"product-price:{product_id}"


def _stored(model: BaseModel) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


class BasketService:
    def __init__(self, sidecar: DaprSidecar, settings: Settings) -> None:
        self._sidecar = sidecar
        self._settings = settings

    async def get(self, buyer_id: str) -> tuple[Basket, str | None]:
        # Eventual is enough to show a basket: the next write checks the ETag anyway.
        entry = await self._sidecar.get_state(state_key(buyer_id), consistency="eventual")
        basket = await self._with_current_prices(self._basket(buyer_id, entry.value))
        return basket, entry.etag

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
        changed = Basket(buyer_id=buyer_id)

        def step(entry: StateEntry) -> Any:
            nonlocal changed
            changed = change(self._basket(buyer_id, entry.value))
            self._check_lines(len(changed.items))
            return _stored(changed)

        await self._read_modify_write(
            state_key(buyer_id), step, ttl_seconds=self._settings.basket_ttl_seconds
        )
        return changed

    async def _read_modify_write(
        self, key: str, change: Callable[[StateEntry], Any | None], *, ttl_seconds: int | None
    ) -> bool:
        """Save `change(entry)` with the ETag of the entry it was made from; when somebody else
        saved in between, read again and redo the change. `change` returning None means there
        is nothing to write. Returns whether something was written."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(ETagMismatch),
            stop=stop_after_attempt(self._settings.basket_conflict_attempts),
            wait=wait_random_exponential(multiplier=0.005, max=0.2),
        )
        try:
            async for attempt in retrying:
                with attempt:
                    # Strong: the ETag we save against must be the newest one.
                    entry = await self._sidecar.get_state(key, consistency="strong")
                    value = change(entry)
                    if value is None:
                        return False
                    await self._sidecar.save_state(
                        key, value, etag=entry.etag, concurrency="first-write",
                        consistency="strong", ttl_seconds=ttl_seconds,
                    )  # fmt: skip
                    return True
        except RetryError:
            pass
        raise BasketConflict(
            "The basket kept changing while this request tried to update it; try again."
        )

    # -- checkout ------------------------------------------------------------------------

    async def checkout(self, buyer_id: str, shipping: Shipping, idempotency_key: str | None) -> str:
        """Publish the priced basket as UserCheckoutAccepted, then take those lines out of the
        basket. Returns the checkout's request id; a retry with the same Idempotency-Key gets the
        same id and publishes nothing new."""
        record_key = f"checkout:{buyer_id}:{idempotency_key}" if idempotency_key else None
        if record_key is not None:
            done = await self._sidecar.get_state(record_key, consistency="strong")
            if done.value is not None:
                return str(done.value["requestId"])
        entry = await self._sidecar.get_state(state_key(buyer_id), consistency="strong")
        basket = self._basket(buyer_id, entry.value)
        if not basket.items:
            raise EmptyBasket("The basket is empty; add something before checking out.")
        priced = await self._with_current_prices(basket.model_copy(deep=True))
        # With a key, the id is derived from it: a retry whose first attempt published but
        # crashed before recording it publishes the same event id again, and subscribers
        # deduplicate on that id.
        request_id = str(
            uuid5(CHECKOUT_NAMESPACE, f"{buyer_id}:{idempotency_key}") if idempotency_key
            else uuid4()
        )  # fmt: skip
        lines = [
            CheckoutLine(
                product_id=i.product_id,
                product_name=i.product_name,
                unit_price=i.unit_price,
                quantity=i.quantity,
            )
            for i in priced.items
        ]
        event = UserCheckoutAccepted(
            request_id=request_id,
            buyer_id=buyer_id,
            items=lines,
            total=sum((line.unit_price * line.quantity for line in lines), Decimal(0)),
            shipping=shipping,
        )
        await self._sidecar.publish(
            CHECKOUT_TOPIC, _stored(event), event_id=request_id, event_type="UserCheckoutAccepted"
        )
        if record_key is not None:
            await self._sidecar.save_state(
                record_key, {"requestId": request_id}, etag=None, concurrency="last-write",
                consistency="strong", ttl_seconds=self._settings.checkout_idempotency_seconds,
            )  # fmt: skip
        await self._remove_checked_out(buyer_id, basket, entry.etag)
        return request_id

    async def _remove_checked_out(self, buyer_id: str, bought: Basket, etag: str | None) -> None:
        """Delete the basket if it is still the version that was checked out; if something was
        added meanwhile, take out only what was bought, so the new item stays."""
        if not self._settings.basket_optimistic_concurrency:
            await self._sidecar.delete_state(state_key(buyer_id), etag=None)
            return
        try:
            await self._sidecar.delete_state(state_key(buyer_id), etag=etag)
            return
        except ETagMismatch:
            pass
        taken = {item.product_id: item.quantity for item in bought.items}

        def take_out(basket: Basket) -> Basket:
            for item in basket.items:
                item.quantity -= taken.get(item.product_id, 0)
            basket.items = [item for item in basket.items if item.quantity > 0]
            return basket

        await self._update(buyer_id, take_out)

    # -- prices --------------------------------------------------------------------------

    async def apply_price_change(self, event_id: str, change: ProductPriceChanged) -> bool:
        """Remember the product's new price, unless a newer one is already known. A repeated or
        late event has a price version at or below the stored one and changes nothing."""

        def newer(entry: StateEntry) -> Any | None:
            if entry.value is not None:
                known = ProductPrice.model_validate(entry.value)
                if known.price_version >= change.price_version:
                    return None
            return _stored(
                ProductPrice(
                    product_id=change.product_id,
                    price=change.price,
                    price_version=change.price_version,
                    event_id=event_id,
                )
            )

        # No TTL: one small entry per product whose price ever changed.
        return await self._read_modify_write(price_key(change.product_id), newer, ttl_seconds=None)

    async def _with_current_prices(self, basket: Basket) -> Basket:
        """Show a newer catalog price than the one a line was added at, with the old one.

        One bulk read of the lines' price entries: the cost depends on the basket's lines, never
        on how many baskets hold a product, because a price change writes one entry per product
        instead of touching every basket (which the state API could not even list)."""
        if not basket.items:
            return basket
        keys = [price_key(item.product_id) for item in basket.items]
        entries = await self._sidecar.get_bulk_state(keys)
        for item, key in zip(basket.items, keys, strict=True):
            entry = entries.get(key)
            if entry is None or entry.value is None:
                continue
            current = ProductPrice.model_validate(entry.value)
            if current.price_version > item.price_version and current.price != item.unit_price:
                item.old_unit_price = item.unit_price
                item.unit_price = current.price
                item.price_version = current.price_version
        return basket

    async def _save(self, buyer_id: str, basket: Basket, etag: str | None) -> None:
        optimistic = self._settings.basket_optimistic_concurrency
        await self._sidecar.save_state(
            state_key(buyer_id),
            _stored(basket),
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
        price_version=product.get("priceVersion", 0),
    )


def _reprice(item: BasketItem, product: dict[str, Any]) -> None:
    price = Decimal(str(product["price"]))
    if price != item.unit_price:
        item.old_unit_price = item.unit_price
        item.unit_price = price
    item.product_name = product["name"]
    item.price_version = product.get("priceVersion", item.price_version)
