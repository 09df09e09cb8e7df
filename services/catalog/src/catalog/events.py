"""The events the catalog publishes and consumes, as they travel (camelCase JSON)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel

PRICE_CHANGED = "product-price-changed"
CHECKOUT_ACCEPTED = "user-checkout-accepted"
RESERVATION_REJECTED = "stock-reservation-rejected"
STOCK_RESERVED = "stock-reserved"
PRODUCT_DELETED = "product-deleted"

Money = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]


class EventModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ProductPriceChanged(EventModel):
    product_id: int
    price: Money
    old_price: Money
    price_version: int


class CheckoutLine(EventModel):
    # A product id out of the column's range names no product and never will: refused here,
    # where it is a malformed event, not by the database on every delivery.
    product_id: int = Field(ge=1, le=2**31 - 1)
    product_name: str = ""
    unit_price: Money = Decimal(0)
    quantity: int = Field(ge=1, le=10_000)


class UserCheckoutAccepted(EventModel):
    """What the basket publishes at checkout; the catalog needs the lines to reserve stock."""

    request_id: str = Field(min_length=1, max_length=200)
    buyer_id: str = Field(min_length=1, max_length=200)
    items: list[CheckoutLine] = Field(min_length=1, max_length=1000)


class Shortage(EventModel):
    product_id: int
    requested: int
    available: int | None  # None: no such product


class StockReservationRejected(EventModel):
    """Nothing was reserved. `items` are the checkout's lines, so the basket can give them
    back to the buyer."""

    request_id: str
    buyer_id: str
    reason: str
    shortages: list[Shortage]
    items: list[CheckoutLine]


class StockReserved(EventModel):
    """Every line of the checkout was taken off stock."""

    request_id: str
    buyer_id: str


class ProductDeleted(EventModel):
    """The product is gone from the catalog; a basket line holding it can no longer be bought."""

    product_id: int
