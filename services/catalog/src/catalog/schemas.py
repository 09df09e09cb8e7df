"""What the catalog API accepts and returns: camelCase on the wire, snake_case in Python."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Generic, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
    with_config,
)
from pydantic.alias_generators import to_camel
from typing_extensions import TypedDict  # pydantic reads TypedDicts from here on Python 3.11

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


# Python's whitespace (what `str.isspace()` and `str.strip()` see), spelled out: the regex
# dialects that read these patterns (JSON Schema's ECMA-262, Python's, Rust's in pydantic-core)
# disagree on `\s`, and the OpenAPI document must refuse exactly what the service refuses.
_SPACE = "".join(f"\\u{ord(c):04x}" for c in map(chr, range(0x3001)) if c.isspace())
# 1 to NAME_MAX characters, no NUL, and any whitespace around them (which the service strips).
NAME_PATTERN = (
    rf"^[{_SPACE}]*[^{_SPACE}\u0000](?:[^\u0000]{{0,{NAME_MAX - 2}}}[^{_SPACE}\u0000])?[{_SPACE}]*$"
)
NO_NUL_PATTERN = r"^[^\u0000]*$"
PRICE_MAX = Decimal(10 ** (PRICE_DIGITS - PRICE_SCALE)) - Decimal(1).scaleb(-PRICE_SCALE)
PRICE_TEXT = re.compile(
    rf"(0|[1-9][0-9]{{0,{PRICE_DIGITS - PRICE_SCALE - 1}}})(\.[0-9]{{1,{PRICE_SCALE}}})?"
)


def _price_in(value: object) -> object:
    # A JSON number, or the same number written as plain decimal text ("12.50"); never a boolean,
    # an exponent, a sign or leading zeros, which Decimal would otherwise take.
    if isinstance(value, bool) or (isinstance(value, str) and not PRICE_TEXT.fullmatch(value)):
        raise ValueError(f"must be a number from 0 to {PRICE_MAX} with at most two decimals")
    return value


def _name(value: str) -> str:
    if not re.fullmatch(NAME_PATTERN, value):
        raise ValueError(
            f"must have 1 to {NAME_MAX} characters besides surrounding whitespace, and no NUL"
        )
    return value.strip()


Name = Annotated[
    str,
    AfterValidator(_name),
    AfterValidator(storable_text),
    WithJsonSchema({"type": "string", "pattern": NAME_PATTERN}, mode="validation"),
]
Description = Annotated[
    str,
    StringConstraints(max_length=DESCRIPTION_MAX, pattern=NO_NUL_PATTERN),
    AfterValidator(storable_text),
]
PictureFileName = Annotated[
    str,
    StringConstraints(
        max_length=PICTURE_FILE_NAME_MAX,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*\.(svg|png|jpe?g|webp)$",
    ),
    Field(description="One of the pictures the catalog ships with; another name is 422"),
]
Id = Annotated[int, Field(ge=1, le=INT32_MAX)]
Quantity = Annotated[int, Field(ge=0, le=INT32_MAX)]


def _json_integer(value: object) -> object:
    # JSON Schema's `integer` is a number without a fraction (2020-12 §6.1.1: 7.0 is one too);
    # pydantic would also take true/false and digit strings, which the document refuses.
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON integer")
    return value


BodyId = Annotated[Id, BeforeValidator(_json_integer)]
BodyQuantity = Annotated[Quantity, BeforeValidator(_json_integer)]
# In: a JSON number or plain decimal text with at most two decimals. Out: a JSON number.
Price = Annotated[
    Decimal,
    BeforeValidator(_price_in),
    Field(ge=0, le=PRICE_MAX, max_digits=PRICE_DIGITS, decimal_places=PRICE_SCALE),
    PlainSerializer(float, return_type=float, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": float(PRICE_MAX), "multipleOf": 0.01},
                {"type": "string", "pattern": f"^{PRICE_TEXT.pattern}$"},
            ]
        },
        mode="validation",
    ),
]


class CamelModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True
    )


BrandId = Annotated[
    BodyId, Field(description="A brand from GET /api/catalog/brands; another id is 422")
]
TypeId = Annotated[
    BodyId, Field(description="A type from GET /api/catalog/types; another id is 422")
]


class ItemWrite(CamelModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Description = ""
    price: Price
    picture_file_name: PictureFileName | None = None
    catalog_brand_id: BrandId
    catalog_type_id: TypeId
    available_stock: BodyQuantity = 0
    restock_threshold: BodyQuantity = 0
    max_stock_threshold: BodyQuantity = 0


class ItemCreate(ItemWrite):
    """A new catalog item."""


class ItemUpdate(ItemWrite):
    """The whole new state of an existing item (PUT replaces)."""


@with_config(
    ConfigDict(alias_generator=to_camel, validate_by_name=True, validate_by_alias=True,
               extra="forbid")
)  # fmt: skip
class ItemPatch(TypedDict, total=False):
    """The fields to change and nothing else, as a JSON merge patch (RFC 7396): a field left out
    keeps its value, `null` takes the picture away, `null` for any other field is 422."""

    name: Name
    description: Description
    price: Price
    picture_file_name: PictureFileName | None
    catalog_brand_id: BrandId
    catalog_type_id: TypeId
    available_stock: BodyQuantity
    restock_threshold: BodyQuantity
    max_stock_threshold: BodyQuantity


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
    version: Annotated[
        int,
        Field(
            description="Goes up with every change to the item, a stock reservation's included; "
            'the ETag of the item\'s own responses is this number quoted ("7")'
        ),
    ]

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
            version=item.version,
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
