"""What the storefront reads from the catalog and basket APIs, and what it sends to them."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    # Fields the APIs add later are ignored, so the storefront keeps working while they grow.
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, extra="ignore"
    )


class Named(CamelModel):
    id: int
    name: str


class CatalogItem(CamelModel):
    id: int
    name: str
    description: str = ""
    price: Decimal
    picture_file_name: str | None = None
    picture_url: str | None = None
    catalog_brand_id: int
    catalog_brand: str = ""
    catalog_type_id: int
    catalog_type: str = ""
    available_stock: int = 0
    restock_threshold: int = 0
    max_stock_threshold: int = 0
    # Moves with every change, a stock reservation's included; the item's ETag is it, quoted.
    version: int


class CatalogPage(CamelModel):
    page_index: int
    page_size: int
    count: int
    items: list[CatalogItem]


class BasketItem(CamelModel):
    product_id: int
    product_name: str
    unit_price: Decimal
    old_unit_price: Decimal | None = None
    quantity: int
    picture_url: str | None = None
    unavailable: bool = False  # the catalog deleted the product

    @property
    def line_total(self) -> Decimal:
        return self.unit_price * self.quantity


class Basket(CamelModel):
    buyer_id: str
    items: list[BasketItem] = Field(default_factory=list)

    @property
    def subtotal(self) -> Decimal:
        return sum((item.line_total for item in self.items), Decimal(0))

    @property
    def quantity(self) -> int:
        return sum(item.quantity for item in self.items)


class Shipping(CamelModel):
    full_name: str
    street: str
    city: str
    postal_code: str
    country: str


class Shortage(CamelModel):
    product_id: int
    requested: int
    available: int | None = None


class CheckoutStatus(CamelModel):
    """`GET /api/basket/checkouts/{requestId}`: accepted, reserved or rejected."""

    request_id: str
    status: str
    shortages: list[Shortage] = Field(default_factory=list)
    returned: list[int] = Field(default_factory=list)
