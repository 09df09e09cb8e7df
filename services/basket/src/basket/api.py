"""Basket routes. The basket is always the caller's own: the buyer id comes from the token."""

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials

from basket.schemas import Basket, BasketItemAdd, BasketItemUpdate, BasketReplace, ProductId
from basket.service import BasketService
from eshop_common.auth import User, current_user
from eshop_common.auth import _bearer as bearer

router = APIRouter(prefix="/api/basket", tags=["basket"])

# FastAPI runs a plain `def` dependency on a worker thread. Both dependencies below take
# microseconds (an attribute lookup, an HS256 check), far less than that thread hop, which was
# the largest single cost of a basket read; as `async def` they run on the event loop.


async def get_basket_service(request: Request) -> BasketService:
    service: BasketService = request.state.baskets
    return service


async def get_current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> User:
    return current_user(request, credentials)


Baskets = Annotated[BasketService, Depends(get_basket_service)]
CurrentUser = Annotated[User, Depends(get_current_user)]
ProductIdPath = Annotated[ProductId, Path(alias="productId")]
IfMatch = Annotated[
    str | None,
    Header(description="ETag from GET /api/basket; the write fails with 412 if it changed."),
]


def _unquote(etag: str | None) -> str | None:
    if etag is None:
        return None
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"')


@router.get("", response_model=Basket, response_model_exclude_none=True)
async def read_basket(user: CurrentUser, baskets: Baskets, response: Response) -> Basket:
    """The caller's basket (empty when there is none), with its ETag."""
    basket, etag = await baskets.get(user.id)
    if etag is not None:
        response.headers["ETag"] = f'"{etag}"'
    return basket


@router.put("", response_model=Basket, response_model_exclude_none=True)
async def replace_basket(
    body: BasketReplace, user: CurrentUser, baskets: Baskets, if_match: IfMatch = None
) -> Basket:
    """Replace the caller's basket; names and prices are taken from the catalog."""
    return await baskets.replace(user.id, body.items, _unquote(if_match))


@router.delete("", status_code=status.HTTP_204_NO_CONTENT)
async def delete_basket(user: CurrentUser, baskets: Baskets, if_match: IfMatch = None) -> None:
    """Empty the caller's basket."""
    await baskets.delete(user.id, _unquote(if_match))


@router.post("/items", response_model=Basket, response_model_exclude_none=True)
async def add_basket_item(body: BasketItemAdd, user: CurrentUser, baskets: Baskets) -> Basket:
    """Add a product, or more of it, to the caller's basket."""
    return await baskets.add_item(user.id, body)


@router.patch("/items/{productId}", response_model=Basket, response_model_exclude_none=True)
async def update_basket_item(
    product_id: ProductIdPath, body: BasketItemUpdate, user: CurrentUser, baskets: Baskets
) -> Basket:
    """Set the quantity of one product in the caller's basket."""
    return await baskets.set_quantity(user.id, product_id, body.quantity)


@router.delete("/items/{productId}", response_model=Basket, response_model_exclude_none=True)
async def delete_basket_item(
    product_id: ProductIdPath, user: CurrentUser, baskets: Baskets
) -> Basket:
    """Remove one product from the caller's basket."""
    return await baskets.remove_item(user.id, product_id)
