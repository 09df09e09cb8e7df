"""Wire shapes: camelCase JSON outside, snake_case Python inside."""

import re
import uuid
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, model_validator
from pydantic.alias_generators import to_camel

MAX_QUANTITY = 99

# Money stays Decimal in Python and travels as a JSON number.
Money = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]
ProductId = Annotated[int, Field(ge=1, le=2**31 - 1)]
Quantity = Annotated[int, Field(ge=1, le=MAX_QUANTITY)]
# The buyer id becomes the state key, one segment of the sidecar's URL. Dapr refuses keys
# containing `||`, the service keeps its own entries under keys with `:` (prices, idempotency
# keys), and `.` or `..` alone would be removed from the URL as a dot segment (RFC 3986 §5.2.4)
# before it reaches the sidecar; so buyer ids stay within this set.
BUYER_ID = re.compile(r"^(?!\.{1,2}$)[A-Za-z0-9._@+-]{1,128}$")


def _buyer_id(value: str) -> str:
    if not BUYER_ID.match(value):
        raise ValueError("not a buyer id: 1 to 128 letters, digits and . _ @ + - only")
    return value


# A buyer id in an event: one that fails here could never name a basket, and asking the sidecar
# for it would look like a store outage.
BuyerId = Annotated[str, AfterValidator(_buyer_id)]


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class BasketItemPublic(CamelModel):
    product_id: int
    product_name: str
    unit_price: Money
    old_unit_price: Money | None = None
    quantity: int
    picture_url: str | None = None  # a catalog item may have no picture
    # True: the catalog deleted the product; the line can be removed, not bought.
    unavailable: bool | None = None


class BasketItem(BasketItemPublic):
    """A line as stored: also the catalog's price version the unit price was read at. Read
    back, a line must be one the API could have written: stored data is checked on read."""

    product_id: ProductId
    unit_price: Money = Field(ge=0)
    old_unit_price: Money | None = Field(default=None, ge=0)
    quantity: Quantity
    price_version: int = Field(default=0, ge=0)


class BasketPublic(CamelModel):
    buyer_id: str
    items: list[BasketItemPublic] = Field(default_factory=list)


def new_revision() -> str:
    """A fresh name for one saved version of a basket: a random UUID (122 random bits), so in
    practice it never repeats."""
    return str(uuid.uuid4())


class BasketItemAdd(CamelModel):
    """A product to put in the basket; its name and price come from the catalog, not from here."""

    product_id: ProductId
    quantity: Quantity = 1


class BasketItemUpdate(CamelModel):
    quantity: Quantity


class BasketReplace(CamelModel):
    items: list[BasketItemAdd] = Field(max_length=1000)


Text = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]*$")]


class Shipping(CamelModel):
    """Where the order goes. No payment data: the sample neither stores nor publishes any."""

    full_name: Text
    street: Text
    city: Text
    postal_code: Annotated[str, Field(min_length=1, max_length=20, pattern=r"^[A-Za-z0-9 -]+$")]
    country: Text


class CheckoutRequest(CamelModel):
    shipping: Shipping


class CheckoutAccepted(CamelModel):
    request_id: str


class CheckoutLine(CamelModel):
    product_id: ProductId
    product_name: str
    unit_price: Money = Field(ge=0)
    quantity: Quantity  # what one basket line can hold, so a line given back fits one


class UserCheckoutAccepted(CamelModel):
    """Published at checkout: the priced basket as the buyer saw it, and where it goes."""

    request_id: str
    buyer_id: str
    items: list[CheckoutLine]
    total: Money
    shipping: Shipping


CHECKOUTS_KEPT = 20
REVISIONS_KEPT = 16


class Shortage(CamelModel):
    product_id: int
    requested: int
    available: int | None = None  # None: no such product


CheckoutState = Literal["accepted", "reserved", "rejected"]


class CheckoutStatus(CamelModel):
    """What became of a checkout: `accepted` (the order is out, the catalog has not answered
    yet), `reserved` (every line was taken off stock) or `rejected` (nothing was; `shortages`
    says why, and the lines named in `returned` went back into the basket)."""

    request_id: str
    status: CheckoutState = "accepted"
    shortages: list[Shortage] | None = None
    returned: list[int] | None = None


class CheckoutRecord(CheckoutStatus):
    """One checkout of the basket, as kept in it: its status and the Idempotency-Key it came
    with."""

    idempotency_key: str | None = None
    # Which request the key came with (see api._fingerprint).
    request_fingerprint: str | None = None


class OutboxEntry(CamelModel):
    """A checkout's event, saved in the basket by the same write that emptied it and removed
    once published. `committed_at` is the Unix time of that write."""

    event: UserCheckoutAccepted
    committed_at: float


class PendingOutboxes(CamelModel):
    """Key `outbox-pending:<shard>`: buyers whose basket may hold an unpublished checkout, with
    the Unix time each was last registered. Written before a checkout's save, so a replica
    that dies before publishing leaves a trace another replica's sweep follows."""

    buyers: dict[str, float] = Field(default_factory=dict)


class Basket(CamelModel):
    """The basket as stored in the state store under the buyer's id.

    `revision` is drawn anew for every save and is the basket's HTTP ETag: random, so an old ETag
    can never match a later basket, whatever the store does with its own version numbers.
    `revisions` are the latest ones saved, newest last: a writer whose save looked refused can
    tell whether it was stored after all, even when others saved after it.
    `checkouts` holds the latest checkouts, so a checkout of a version that was already checked
    out is recognised as one. `outbox` holds the events of checkouts not yet known to be
    published: the basket's own transactional outbox, one key written by one conditional save."""

    schema_version: Literal[2] = 2
    buyer_id: str
    items: list[BasketItem] = Field(default_factory=list)
    revision: str = Field(default_factory=new_revision)
    revisions: list[str] = Field(default_factory=list)
    checkouts: list[CheckoutRecord] = Field(default_factory=list)
    outbox: list[OutboxEntry] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, value: Any) -> Any:
        """Version 1, without `schemaVersion`, kept `checkouts` as bare request ids."""
        if isinstance(value, dict) and "schemaVersion" not in value:
            checkouts = value.get("checkouts")
            if isinstance(checkouts, list):
                checkouts = [{"requestId": c} if isinstance(c, str) else c for c in checkouts]
            value = {**value, "schemaVersion": 2, "checkouts": checkouts or []}
        return value


class StockReserved(CamelModel):
    request_id: str = Field(min_length=1)
    buyer_id: BuyerId


class StockReservationRejected(CamelModel):
    request_id: str = Field(min_length=1)
    buyer_id: BuyerId
    reason: str
    shortages: list[Shortage]
    items: list[CheckoutLine]


class ProductDeleted(CamelModel):
    product_id: int = Field(ge=1)


class ProductPriceChanged(CamelModel):
    product_id: int = Field(ge=1)
    price: Decimal = Field(ge=0)
    old_price: Decimal = Field(ge=0)
    price_version: int = Field(ge=1)


class ProductPrice(CamelModel):
    """The newest price the basket has heard of for one product (key `product-price:<id>`);
    `deleted`: the catalog deleted the product (kept while a basket may still hold it)."""

    product_id: int
    price: Money
    price_version: int
    event_id: str
    deleted: bool = False


class IdempotentReply(CamelModel):
    """A response kept for an Idempotency-Key, to be given again to a retry."""

    status: int
    body: Any
    etag: str | None = None


class IdempotencyRecord(CamelModel):
    """Key `idempotency:<buyerId>:<key>`: which request claimed the key, and once it is done,
    its response. `claimed_at` 0 means no request holds the key (the last one failed)."""

    fingerprint: str
    claimed_at: float = 0.0
    reply: IdempotentReply | None = None
