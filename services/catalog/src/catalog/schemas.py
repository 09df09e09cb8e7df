"""What the catalog API accepts and returns: camelCase on the wire, snake_case in Python."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Generic, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
)
from pydantic.alias_generators import to_camel

from catalog.models import (
    DESCRIPTION_MAX,
    NAME_MAX,
    PICTURE_FILE_NAME_MAX,
    PRICE_DIGITS,
    PRICE_SCALE,
    CatalogBrand,
    CatalogItem,
    CatalogType,
)

INT32_MAX = 2**31 - 1
PAGE_SIZE_MAX = 100
BY_IDS_MAX = 100
SEARCH_TEXT_MAX = 100


def storable_text(value: str) -> str:
    """PostgreSQL text cannot hold NUL, and UTF-8 cannot hold lone surrogates from JSON escapes."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=NAME_MAX),
    AfterValidator(storable_text),
]
Description = Annotated[
    str, StringConstraints(max_length=DESCRIPTION_MAX), AfterValidator(storable_text)
]
PictureFileName = Annotated[
    str,
    StringConstraints(
        max_length=PICTURE_FILE_NAME_MAX,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*\.(svg|png|jpe?g|webp)$",
    ),
]
Id = Annotated[int, Field(ge=1, le=INT32_MAX)]
Quantity = Annotated[int, Field(ge=0, le=INT32_MAX)]
# In: a JSON number or numeric string with at most two decimals. Out: a JSON number.
Price = Annotated[
    Decimal,
    Field(ge=0, max_digits=PRICE_DIGITS, decimal_places=PRICE_SCALE),
    PlainSerializer(float, return_type=float, when_used="json"),
]


class CamelModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True
    )


class ItemWrite(CamelModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Description = ""
    price: Price
    picture_file_name: PictureFileName | None = None
    catalog_brand_id: Id
    catalog_type_id: Id
    available_stock: Quantity = 0
    restock_threshold: Quantity = 0
    max_stock_threshold: Quantity = 0


class ItemCreate(ItemWrite):
    """A new catalog item."""


class ItemUpdate(ItemWrite):
    """The whole new state of an existing item (PUT replaces)."""


class ItemPublic(CamelModel):
    id: int
    name: str
    description: str
    price: Price
    picture_file_name: str | None
    picture_url: str | None
    catalog_brand_id: int
    catalog_brand: str
    catalog_type_id: int
    catalog_type: str
    available_stock: int
    restock_threshold: int
    max_stock_threshold: int
    price_version: int

    @classmethod
    def from_model(cls, item: CatalogItem) -> ItemPublic:
        return cls(
            id=item.id,
            name=item.name,
            description=item.description,
            price=item.price,
            picture_file_name=item.picture_file_name,
            picture_url=picture_url(item.id) if item.picture_file_name else None,
            catalog_brand_id=item.catalog_brand_id,
            catalog_brand=item.brand.name,
            catalog_type_id=item.catalog_type_id,
            catalog_type=item.type.name,
            available_stock=item.available_stock,
            restock_threshold=item.restock_threshold,
            max_stock_threshold=item.max_stock_threshold,
            price_version=item.price_version,
        )


def picture_url(item_id: int) -> str:
    return f"/api/catalog/items/{item_id}/picture"


class BrandPublic(CamelModel):
    id: int
    name: str

    @classmethod
    def from_model(cls, brand: CatalogBrand) -> BrandPublic:
        return cls(id=brand.id, name=brand.name)


class TypePublic(CamelModel):
    id: int
    name: str

    @classmethod
    def from_model(cls, type_: CatalogType) -> TypePublic:
        return cls(id=type_.id, name=type_.name)


T = TypeVar("T")


class Page(CamelModel, Generic[T]):
    page_index: int
    page_size: int
    count: int
    items: list[T]
