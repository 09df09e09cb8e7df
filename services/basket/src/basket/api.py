"""Basket routes. The basket is always the caller's own: the buyer id comes from the token."""

import hashlib
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Depends, Header, Path, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from basket import metrics
from basket.schemas import (
    BUYER_ID,
    Basket,
    BasketItemAdd,
    BasketItemUpdate,
    BasketPublic,
    BasketReplace,
    CheckoutAccepted,
    CheckoutRequest,
    CheckoutStatus,
    IdempotentReply,
    ProductDeleted,
    ProductId,
    ProductPriceChanged,
    StockReservationRejected,
    StockReserved,
)
from basket.service import (
    STALE_BASKET,
    BasketConflict,
    BasketService,
    RequestKey,
    Saved,
    UnreadableBasket,
)
from eshop_common.auth import CurrentUser, FromSidecar
from eshop_common.conditions import ENTITY_TAGS, Preconditions
from eshop_common.events import RETRY, SUCCESS, EventAck, Undeliverable, dropped, parse_event
from eshop_common.problems import BadRequest, ServiceUnavailable, problem_responses

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

# draft-ietf-httpapi-idempotency-key-header §2.1: a Structured Field string ("..."); the bare
# value is accepted too. Its characters become part of a state key.
IDEMPOTENCY_KEY = re.compile(r'^(?:"([A-Za-z0-9._-]{1,100})"|([A-Za-z0-9._-]{1,100}))$')


async def get_basket_service(request: Request) -> BasketService:
    service: BasketService = request.state.baskets
    return service


async def get_buyer_id(user: CurrentUser) -> str:
    if not BUYER_ID.match(user.id):
        raise BadRequest(
            "The token's subject cannot be a buyer id: use 1 to 128 letters, digits and "
            ". _ @ + - only, and not '.' or '..' alone."
        )
    return user.id


async def get_preconditions(
    request: Request,
    _if_match: Annotated[
        str | None,
        Header(
            alias="If-Match",
            description='ETags from GET /api/basket (`"abc", "def"`) or `*`; the write happens '
            "only if the basket is at one of them (RFC 9110 §13.1.1), else 412.",
            json_schema_extra={"pattern": ENTITY_TAGS},
        ),
    ] = None,
    _if_none_match: Annotated[
        str | None,
        Header(
            alias="If-None-Match",
            description="`*`: only if there is no basket yet (RFC 9110 §13.1.2), else 412.",
            json_schema_extra={"pattern": ENTITY_TAGS},
        ),
    ] = None,
) -> Preconditions:
    """Raises MalformedPrecondition (400) for a value outside RFC 9110's grammar."""
    return Preconditions.parse(
        request.headers.getlist("if-match"), request.headers.getlist("if-none-match")
    )


async def get_idempotency_key(
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Send the same request again with the same key and it takes effect once; "
            "the retry gets the first response (draft-ietf-httpapi-idempotency-key-header).",
            json_schema_extra={"pattern": IDEMPOTENCY_KEY.pattern},
        ),
    ] = None,
) -> str | None:
    if key is None:
        return None
    match = IDEMPOTENCY_KEY.match(key)
    if match is None:
        raise BadRequest(
            "Idempotency-Key: use 1 to 100 letters, digits, '.', '_' or '-', optionally quoted.",
            errors=[{"field": "Idempotency-Key", "in": "header", "message": "invalid key"}],
        )
    return match.group(1) or match.group(2)


Baskets = Annotated[BasketService, Depends(get_basket_service)]
BuyerId = Annotated[str, Depends(get_buyer_id)]
Conditions = Annotated[Preconditions, Depends(get_preconditions)]
IdempotencyKey = Annotated[str | None, Depends(get_idempotency_key)]
ProductIdPath = Annotated[ProductId, Path(alias="productId")]


def _public(basket: Basket) -> Any:
    return BasketPublic.model_validate(basket.model_dump()).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )


def _quoted(etag: str) -> str:
    return f'"{etag}"'


def _basket_reply(saved: Saved) -> IdempotentReply:
    return IdempotentReply(status=200, body=_public(saved.basket), etag=saved.etag)


def _respond(reply: IdempotentReply) -> Response:
    headers = {"ETag": _quoted(reply.etag)} if reply.etag is not None else None
    if reply.status == status.HTTP_204_NO_CONTENT:
        return Response(status_code=reply.status, headers=headers)
    return JSONResponse(reply.body, status_code=reply.status, headers=headers)


def _fingerprint(request: Request, body: BaseModel | None) -> str:
    """What makes two requests with one Idempotency-Key the same request: method, path,
    conditions and the body as parsed (so formatting does not count)."""
    parts = [
        request.method,
        request.url.path,
        ",".join(request.headers.getlist("if-match")),
        ",".join(request.headers.getlist("if-none-match")),
        body.model_dump_json(by_alias=True) if body is not None else "",
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


async def _once(
    baskets: BasketService,
    buyer: str,
    key: str | None,
    request: Request,
    body: BaseModel | None,
    perform: Callable[[], Awaitable[IdempotentReply]],
) -> Response:
    if key is None:
        return _respond(await perform())
    return _respond(await baskets.idempotent(buyer, key, _fingerprint(request, body), perform))


@router.get(
    "",
    response_model=BasketPublic,
    response_model_exclude_none=True,
    responses={
        **BASKET_LINKS,
        304: {"description": "Not Modified: the basket is at an ETag of If-None-Match"},
        **problem_responses(412),
    },
)
async def read_basket(buyer: BuyerId, baskets: Baskets, conditions: Conditions) -> Any:
    """The caller's basket (empty when there is none), with its ETag; 304 for If-None-Match."""
    basket, etag = await baskets.get(buyer)
    if conditions.if_match is not None:
        Preconditions(if_match=conditions.if_match).check(etag, STALE_BASKET)
    if etag is not None and conditions.not_modified(etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": _quoted(etag)})
    headers = {"ETag": _quoted(etag)} if etag is not None else None
    return JSONResponse(_public(basket), headers=headers)


@router.put(
    "",
    response_model=BasketPublic,
    response_model_exclude_none=True,
    responses={**BASKET_LINKS, **WRITE_PROBLEMS},
)
async def replace_basket(
    body: BasketReplace, buyer: BuyerId, baskets: Baskets, conditions: Conditions
) -> Any:
    """Replace the caller's basket; names and prices are taken from the catalog."""
    return _respond(_basket_reply(await baskets.replace(buyer, body.items, conditions)))


@router.delete("", status_code=status.HTTP_204_NO_CONTENT, responses=WRITE_PROBLEMS)
async def delete_basket(buyer: BuyerId, baskets: Baskets, conditions: Conditions) -> Response:
    """Empty the caller's basket; the ETag names the emptied basket."""
    saved = await baskets.empty(buyer, conditions)
    return _respond(IdempotentReply(status=204, body=None, etag=saved.etag))


@router.post(
    "/items",
    response_model=BasketPublic,
    response_model_exclude_none=True,
    responses={**BASKET_LINKS, **WRITE_PROBLEMS},
)
async def add_basket_item(
    body: BasketItemAdd,
    buyer: BuyerId,
    baskets: Baskets,
    conditions: Conditions,
    key: IdempotencyKey,
    request: Request,
) -> Any:
    """Add a product, or more of it, to the caller's basket."""

    async def add() -> IdempotentReply:
        return _basket_reply(await baskets.add_item(buyer, body, conditions))

    return await _once(baskets, buyer, key, request, body, add)


@router.patch(
    "/items/{productId}",
    response_model=BasketPublic,
    response_model_exclude_none=True,
    responses={**WRITE_PROBLEMS, **problem_responses(404)},
)
async def update_basket_item(
    product_id: ProductIdPath,
    body: BasketItemUpdate,
    buyer: BuyerId,
    baskets: Baskets,
    conditions: Conditions,
) -> Any:
    """Set the quantity of one product in the caller's basket."""
    saved = await baskets.set_quantity(buyer, product_id, body.quantity, conditions)
    return _respond(_basket_reply(saved))


@router.delete(
    "/items/{productId}",
    response_model=BasketPublic,
    response_model_exclude_none=True,
    responses={**WRITE_PROBLEMS, **problem_responses(404)},
)
async def delete_basket_item(
    product_id: ProductIdPath, buyer: BuyerId, baskets: Baskets, conditions: Conditions
) -> Any:
    """Remove one product from the caller's basket."""
    return _respond(_basket_reply(await baskets.remove_item(buyer, product_id, conditions)))


@router.post(
    "/checkout",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CheckoutAccepted,
    responses={
        202: {
            "description": "Accepted: the order is recorded; follow its status",
            "links": {
                "CheckoutStatus": {
                    "operationId": "read_checkout_status",
                    "parameters": {"requestId": "$response.body#/requestId"},
                }
            },
        },
        **WRITE_PROBLEMS,
    },
)
async def checkout_basket(
    body: CheckoutRequest,
    buyer: BuyerId,
    baskets: Baskets,
    conditions: Conditions,
    key: IdempotencyKey,
    request: Request,
) -> Any:
    """Check out the caller's basket, once per basket version: empties it and publishes
    UserCheckoutAccepted. 202: the order is recorded and its event is (or will be) published."""

    async def checkout() -> IdempotentReply:
        once = RequestKey(key, _fingerprint(request, body)) if key is not None else None
        request_id = await baskets.checkout(buyer, body.shipping, conditions, once)
        accepted = CheckoutAccepted(request_id=request_id).model_dump(by_alias=True)
        return IdempotentReply(status=202, body=accepted)

    return await _once(baskets, buyer, key, request, body, checkout)


@router.get(
    "/checkouts/{requestId}",
    response_model=CheckoutStatus,
    response_model_exclude_none=True,
    responses=problem_responses(404),
)
async def read_checkout_status(
    buyer: BuyerId,
    baskets: Baskets,
    request_id: Annotated[str, Path(alias="requestId", max_length=100)],
) -> CheckoutStatus:
    """What became of one of the caller's latest checkouts: accepted, reserved or rejected."""
    return await baskets.checkout_status(buyer, request_id)


E = TypeVar("E", bound=BaseModel)


async def _handle(
    topic: str, payload: Any, model: type[E], handle: Callable[[str, E], Awaitable[object]]
) -> EventAck:
    """Parse `payload` as a CloudEvent carrying `model`, then `handle(event_id, event)`.

    SUCCESS once handled. DROP for an event that cannot be parsed, and for a stored basket that
    cannot be read: that lasts until its buyer replaces it, and the checkout the event names goes
    with it. RETRY for what passes: the sidecar or the store away, a basket that kept changing
    (https://docs.dapr.io/reference/api/pubsub_api/#expected-http-response)."""
    try:
        event_id, event = parse_event(payload, model)
    except Undeliverable as exc:
        return dropped(topic, exc)
    try:
        await handle(event_id, event)
    except (ServiceUnavailable, BasketConflict):
        return RETRY
    except UnreadableBasket:
        return dropped(topic, Undeliverable("the buyer's stored basket cannot be read", event_id))
    return SUCCESS


@events_router.post("/stock-reserved")
async def on_stock_reserved(baskets: Baskets, payload: Annotated[Any, Body()]) -> EventAck:
    """Mark a checkout reserved; called by the sidecar for each StockReserved."""
    ack = await _handle(
        "stock-reserved", payload, StockReserved, lambda _, event: baskets.record_reserved(event)
    )
    if ack == SUCCESS:
        metrics.CHECKOUT_RESULTS.labels("reserved").inc()
    return ack


@events_router.post("/stock-reservation-rejected")
async def on_stock_reservation_rejected(
    baskets: Baskets, payload: Annotated[Any, Body()]
) -> EventAck:
    """Mark a checkout rejected and give its lines back; called for each
    StockReservationRejected."""
    ack = await _handle(
        "stock-reservation-rejected", payload, StockReservationRejected,
        lambda _, event: baskets.record_rejected(event),
    )  # fmt: skip
    if ack == SUCCESS:
        metrics.CHECKOUT_RESULTS.labels("rejected").inc()
    return ack


@events_router.post("/product-deleted")
async def on_product_deleted(baskets: Baskets, payload: Annotated[Any, Body()]) -> EventAck:
    """Mark a deleted product unavailable in every basket; called for each ProductDeleted."""
    return await _handle("product-deleted", payload, ProductDeleted, baskets.apply_product_deleted)


@events_router.post("/product-price-changed")
async def on_product_price_changed(baskets: Baskets, payload: Annotated[Any, Body()]) -> EventAck:
    """Remember a product's new price; called by the sidecar for each ProductPriceChanged."""
    return await _handle(
        "product-price-changed", payload, ProductPriceChanged, baskets.apply_price_change
    )
