"""Basket routes. The basket is always the caller's own: the buyer id comes from the token."""

import re
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Request, Response, status

from basket.schemas import (
    BasketItemAdd,
    BasketItemUpdate,
    BasketPublic,
    BasketReplace,
    CheckoutAccepted,
    CheckoutRequest,
    ProductId,
    ProductPriceChanged,
)
from basket.service import BasketService
from basket.state import StateStoreUnavailable
from eshop_common.auth import CurrentUser, FromSidecar
from eshop_common.events import DROP, RETRY, SUCCESS, EventAck, parse_event
from eshop_common.problems import BadRequest, problem_responses

# Every basket route: a token that is missing or bad (401) or whose subject cannot be a buyer id
# (400), and a sidecar or state store that does not answer (503).
router = APIRouter(
    prefix="/api/basket", tags=["basket"], responses=problem_responses(400, 401, 503)
)
events_router = APIRouter(
    prefix="/events",
    tags=["events"],
    dependencies=[FromSidecar],
    responses=problem_responses(400, 401, 422),
)
# What a conditional or contended basket write can also answer (RFC 9110 §13.1, RFC 6585 §3).
WRITE_PROBLEMS = problem_responses(409, 412, 422, 428)
# OpenAPI links (3.1 §4.8.20): from a basket to changing or removing its first line.
FIRST_LINE = {"productId": "$response.body#/items/0/productId"}
BASKET_LINKS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The basket",
        "links": {
            "UpdateFirstLine": {"operationId": "update_basket_item", "parameters": FIRST_LINE},
            "DeleteFirstLine": {"operationId": "delete_basket_item", "parameters": FIRST_LINE},
        },
    }
}

# The buyer id becomes the state key. Dapr refuses keys containing `||`, and the service keeps
# its own entries under keys with `:` (prices, checkouts), so buyer ids stay within this set.
BUYER_ID = re.compile(r"^[A-Za-z0-9._@+-]{1,128}$")
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


async def get_basket_service(request: Request) -> BasketService:
    service: BasketService = request.state.baskets
    return service


async def get_buyer_id(user: CurrentUser) -> str:
    if not BUYER_ID.match(user.id):
        raise BadRequest(
            "The token's subject cannot be a buyer id: use letters, digits and . _ @ + - only."
        )
    return user.id


Baskets = Annotated[BasketService, Depends(get_basket_service)]
BuyerId = Annotated[str, Depends(get_buyer_id)]
ProductIdPath = Annotated[ProductId, Path(alias="productId")]
IfMatch = Annotated[
    str | None,
    Header(description="ETag from GET /api/basket; the write fails with 412 if it changed."),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Repeat a checkout with the same key and it is accepted only once.",
        json_schema_extra={"pattern": IDEMPOTENCY_KEY.pattern},  # checked below: 400
    ),
]


def _unquote(etag: str | None) -> str | None:
    if etag is None:
        return None
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"')


@router.get(
    "", response_model=BasketPublic, response_model_exclude_none=True, responses=BASKET_LINKS
)
async def read_basket(buyer: BuyerId, baskets: Baskets, response: Response) -> Any:
    """The caller's basket (empty when there is none), with its ETag."""
    basket, etag = await baskets.get(buyer)
    if etag is not None:
        response.headers["ETag"] = f'"{etag}"'
    return basket


@router.put(
    "",
    response_model=BasketPublic,
    response_model_exclude_none=True,
    responses={**BASKET_LINKS, **WRITE_PROBLEMS},
)
async def replace_basket(
    body: BasketReplace, buyer: BuyerId, baskets: Baskets, if_match: IfMatch = None
) -> Any:
    """Replace the caller's basket; names and prices are taken from the catalog."""
    return await baskets.replace(buyer, body.items, _unquote(if_match))


@router.delete("", status_code=status.HTTP_204_NO_CONTENT, responses=WRITE_PROBLEMS)
async def delete_basket(buyer: BuyerId, baskets: Baskets, if_match: IfMatch = None) -> None:
    """Empty the caller's basket."""
    await baskets.delete(buyer, _unquote(if_match))


@router.post(
    "/items",
    response_model=BasketPublic,
    response_model_exclude_none=True,
    responses={**BASKET_LINKS, **WRITE_PROBLEMS},
)
async def add_basket_item(body: BasketItemAdd, buyer: BuyerId, baskets: Baskets) -> Any:
    """Add a product, or more of it, to the caller's basket."""
    return await baskets.add_item(buyer, body)


@router.patch(
    "/items/{productId}",
    response_model=BasketPublic,
    response_model_exclude_none=True,
    responses={**WRITE_PROBLEMS, **problem_responses(404)},
)
async def update_basket_item(
    product_id: ProductIdPath, body: BasketItemUpdate, buyer: BuyerId, baskets: Baskets
) -> Any:
    """Set the quantity of one product in the caller's basket."""
    return await baskets.set_quantity(buyer, product_id, body.quantity)


@router.delete(
    "/items/{productId}",
    response_model=BasketPublic,
    response_model_exclude_none=True,
    responses={**WRITE_PROBLEMS, **problem_responses(404)},
)
async def delete_basket_item(product_id: ProductIdPath, buyer: BuyerId, baskets: Baskets) -> Any:
    """Remove one product from the caller's basket."""
    return await baskets.remove_item(buyer, product_id)


@router.post("/checkout", status_code=status.HTTP_202_ACCEPTED, responses=WRITE_PROBLEMS)
async def checkout_basket(
    body: CheckoutRequest,
    buyer: BuyerId,
    baskets: Baskets,
    idempotency_key: IdempotencyKey = None,
) -> CheckoutAccepted:
    """Check out the caller's basket: publishes UserCheckoutAccepted and empties the basket."""
    if idempotency_key is not None and not IDEMPOTENCY_KEY.match(idempotency_key):
        raise BadRequest(
            "Idempotency-Key: use 1 to 100 letters, digits, '.', '_' or '-'.",
            errors=[{"field": "Idempotency-Key", "in": "header", "message": "invalid key"}],
        )
    request_id = await baskets.checkout(buyer, body.shipping, idempotency_key)
    return CheckoutAccepted(request_id=request_id)


@events_router.post("/product-price-changed")
async def on_product_price_changed(baskets: Baskets, payload: Annotated[Any, Body()]) -> EventAck:
    """Remember a product's new price; called by the sidecar for each ProductPriceChanged."""
    if (parsed := parse_event(payload, ProductPriceChanged)) is None:
        return DROP
    event_id, change = parsed
    try:
        await baskets.apply_price_change(event_id, change)
    except StateStoreUnavailable:
        return RETRY
    return SUCCESS
