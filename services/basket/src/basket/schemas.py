"""Wire shapes: camelCase JSON outside, snake_case Python inside."""

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel

MAX_QUANTITY = 99

# Money stays Decimal in Python and travels as a JSON number.
Money = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]
ProductId = Annotated[int, Field(ge=1, le=2**31 - 1)]
Quantity = Annotated[int, Field(ge=1, le=MAX_QUANTITY)]


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class BasketItem(CamelModel):
    product_id: int
    product_name: str
    unit_price: Money
    old_unit_price: Money | None = None
    quantity: int
    picture_url: str | None = None  # a catalog item may have no picture


class Basket(CamelModel):
    buyer_id: str
    items: list[BasketItem] = Field(default_factory=list)


class BasketItemAdd(CamelModel):
    """A product to put in the basket; its name and price come from the catalog, not from here."""

    product_id: ProductId
    quantity: Quantity = 1


class BasketItemUpdate(CamelModel):
    quantity: Quantity


class BasketReplace(CamelModel):
    items: list[BasketItemAdd] = Field(max_length=1000)
