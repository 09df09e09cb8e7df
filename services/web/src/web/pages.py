"""The storefront's pages and the forms they post. Each route: read the request, call the APIs
through the client, render a template or redirect with a message."""

from __future__ import annotations

import asyncio
import json
import math
import re
import uuid
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Header, Path, Query, Request
from fastapi.responses import Response

from eshop_common.auth import mint_token
from web.client import BackendError, Backends, ItemChanged
from web.rendering import (
    AdminDep,
    BackendsDep,
    CsrfChecked,
    SignedInDep,
    VisitorDep,
    money,
    redirect,
    render,
    settings_of,
    sign_in_response,
    sign_out_response,
)
from web.schemas import Shipping
from web.security import USER_NAME, local_path

INT32_MAX = 2**31 - 1
SEARCH_MAX = 100
ADMIN_PAGE_SIZE = 20
MAX_QUANTITY = 99
SHIPPING_FIELD_MAX = 200
SUGGESTED_USERS = ("alice", "bob", "carol")
REQUEST_ID = re.compile(r"^[0-9A-Za-z-]{1,64}$")

ItemId = Annotated[int, Path(ge=1, le=INT32_MAX)]
OptionalText = Annotated[str | None, Query(max_length=200)]
NextField = Annotated[str | None, Form(alias="next", max_length=2000)]

router = APIRouter()


def _positive(text: str | None, upper: int = INT32_MAX) -> int | None:
    """A positive whole number from a query or form field; None for empty or nonsense."""
    if text is None or not text.strip().isdigit():
        return None
    value = int(text.strip())
    return value if 1 <= value <= upper else None


def _query(**params: object) -> str:
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return f"?{urlencode(kept)}" if kept else ""


def _items(count: int) -> str:
    return f"{count} item" if count == 1 else f"{count} items"


def _here(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


# -- catalog --------------------------------------------------------------------------------
@router.get("/")
async def read_catalog(
    request: Request,
    backends: BackendsDep,
    _visitor: VisitorDep,
    page: OptionalText = None,
    brand: OptionalText = None,
    type_: Annotated[str | None, Query(alias="type", max_length=200)] = None,
    q: OptionalText = None,
) -> Response:
    """The catalog grid: filter by brand and type, search, page."""
    size = settings_of(request).page_size
    page_no = _positive(page) or 1
    brand_id, type_id = _positive(brand), _positive(type_)
    text = (q or "").strip()[:SEARCH_MAX]
    listing, brands, types = await asyncio.gather(
        backends.list_items(page_no - 1, size, brand_id=brand_id, type_id=type_id, text=text),
        backends.brands(),
        backends.types(),
    )
    pages = max(1, math.ceil(listing.count / size))

    def link(to_page: int) -> str:
        return "/" + _query(
            brand=brand_id, type=type_id, q=text, page=to_page if to_page > 1 else None
        )

    return render(
        request,
        "catalog.html",
        {
            "listing": listing, "brands": brands, "types": types,
            "brand_id": brand_id, "type_id": type_id, "q": text,
            "page_no": page_no, "pages": pages, "link": link, "here": _here(request),
            "filtered": bool(brand_id or type_id or text),
        },
    )  # fmt: skip


@router.get("/items/{item_id}")
async def read_item(
    request: Request, item_id: ItemId, backends: BackendsDep, _visitor: VisitorDep
) -> Response:
    """One product: picture, description, price, stock."""
    item = await backends.get_item(item_id)
    return render(request, "item.html", {"item": item, "here": _here(request)})


@router.get("/pictures/{item_id}")
async def read_picture(
    item_id: ItemId,
    backends: BackendsDep,
    if_none_match: Annotated[str | None, Header(max_length=1024)] = None,
) -> Response:
    """A product picture, fetched from the catalog through the sidecar."""
    picture = await backends.picture(item_id, if_none_match)
    return Response(picture.content, status_code=picture.status, headers=picture.headers)


# -- sign-in --------------------------------------------------------------------------------
@router.get("/signin")
async def read_sign_in(
    request: Request,
    _visitor: VisitorDep,
    next_url: Annotated[str | None, Query(alias="next", max_length=2000)] = None,
) -> Response:
    """The demo identity provider: pick a user name, optionally an admin."""
    return render(
        request, "signin.html", {"next": local_path(next_url), "suggested": SUGGESTED_USERS}
    )


@router.post("/signin", dependencies=[CsrfChecked])
async def sign_in(
    request: Request,
    user_name: Annotated[str, Form(max_length=200)] = "",
    pick: Annotated[str, Form(max_length=200)] = "",
    admin: Annotated[str | None, Form(max_length=10)] = None,
    next_url: NextField = None,
) -> Response:
    """Mint a demo token for the user name and keep it in an HTTP-only cookie."""
    name = (pick or user_name).strip()
    if not USER_NAME.match(name):
        error = (
            "A user name is 1 to 64 letters, digits, dots, dashes, underscores or @, "
            "starting with a letter or digit."
        )
        return render(
            request, "signin.html",
            {"next": local_path(next_url), "suggested": SUGGESTED_USERS, "error": error,
             "user_name": name},
            status_code=400,
        )  # fmt: skip
    settings = settings_of(request)
    is_admin = admin is not None
    token = mint_token(
        settings.jwt_secret.get_secret_value(), name, admin=is_admin,
        ttl=timedelta(hours=settings.session_hours),
    )  # fmt: skip
    who = f"{name} (admin)" if is_admin else name
    return sign_in_response(request, token, local_path(next_url), f"Signed in as {who}.")


@router.post("/signout", dependencies=[CsrfChecked])
async def sign_out(request: Request) -> Response:
    """Forget the demo token."""
    return sign_out_response(request, "/")


# -- basket ---------------------------------------------------------------------------------
@router.get("/basket")
async def read_basket(request: Request, backends: BackendsDep, visitor: SignedInDep) -> Response:
    """The signed-in user's basket, and what the state store holds for it."""
    assert visitor.token is not None
    read = await backends.basket(visitor.token)
    return render(
        request,
        "basket.html",
        {
            "basket": read.basket,
            "etag": read.etag,
            "state_key": f"{backends.basket_app_id}||{read.basket.buyer_id}",
            "stored_json": json.dumps(read.stored, indent=2, ensure_ascii=False),
        },
    )


@router.post("/basket/items", dependencies=[CsrfChecked])
async def add_basket_item(
    request: Request,
    backends: BackendsDep,
    visitor: SignedInDep,
    product_id: Annotated[str, Form(max_length=20)] = "",
    quantity: Annotated[str, Form(max_length=20)] = "1",
    next_url: NextField = None,
) -> Response:
    """Add a product (or more of it) to the basket."""
    assert visitor.token is not None
    back = local_path(next_url, "/basket")
    product, count = _positive(product_id), _positive(quantity, MAX_QUANTITY)
    if product is None or count is None:
        return redirect(request, back, ("error", f"Choose a quantity from 1 to {MAX_QUANTITY}."))
    try:
        basket = await backends.add_to_basket(visitor.token, product, count)
    except BackendError as exc:
        return redirect(request, back, ("error", exc.message))
    line = next((i for i in basket.items if i.product_id == product), None)
    name = line.product_name if line else "the product"
    return redirect(
        request, back,
        ("info", f"Added {count} of {name} to your basket ({_items(basket.quantity)} in all)."),
    )  # fmt: skip


@router.post("/basket/items/{item_id}/quantity", dependencies=[CsrfChecked])
async def update_basket_item(
    request: Request,
    item_id: ItemId,
    backends: BackendsDep,
    visitor: SignedInDep,
    quantity: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    """Set how many of a product the basket holds."""
    assert visitor.token is not None
    count = _positive(quantity, MAX_QUANTITY)
    if count is None:
        return redirect(
            request, "/basket", ("error", f"Choose a quantity from 1 to {MAX_QUANTITY}.")
        )
    try:
        await backends.set_quantity(visitor.token, item_id, count)
    except BackendError as exc:
        return redirect(request, "/basket", ("error", exc.message))
    return redirect(request, "/basket", ("info", f"Quantity changed to {count}."))


@router.post("/basket/items/{item_id}/remove", dependencies=[CsrfChecked])
async def remove_basket_item(
    request: Request, item_id: ItemId, backends: BackendsDep, visitor: SignedInDep
) -> Response:
    """Take a product out of the basket."""
    assert visitor.token is not None
    try:
        await backends.remove_from_basket(visitor.token, item_id)
    except BackendError as exc:
        return redirect(request, "/basket", ("error", exc.message))
    return redirect(request, "/basket", ("info", "Removed from your basket."))


# -- checkout -------------------------------------------------------------------------------
SHIPPING_FIELDS = (
    ("full_name", "Full name", "name"),
    ("street", "Street and number", "street-address"),
    ("city", "City", "address-level2"),
    ("postal_code", "Postal code", "postal-code"),
    ("country", "Country", "country-name"),
)


async def _checkout_page(
    request: Request,
    backends: BackendsDep,
    token: str,
    values: dict[str, str],
    idempotency_key: str,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    read = await backends.basket(token)
    return render(
        request,
        "checkout.html",
        {
            "basket": read.basket, "fields": SHIPPING_FIELDS, "values": values,
            "idempotency_key": idempotency_key, "error": error,
        },
        status_code=status_code,
    )  # fmt: skip


@router.get("/checkout")
async def read_checkout(request: Request, backends: BackendsDep, visitor: SignedInDep) -> Response:
    """The shipping form, with a fresh idempotency key so a double submit checks out once."""
    assert visitor.token is not None
    return await _checkout_page(request, backends, visitor.token, {}, str(uuid.uuid4()))


@router.post("/checkout", dependencies=[CsrfChecked])
async def check_out(
    request: Request,
    backends: BackendsDep,
    visitor: SignedInDep,
    idempotency_key: Annotated[str, Form(max_length=64)] = "",
    full_name: Annotated[str, Form(max_length=SHIPPING_FIELD_MAX)] = "",
    street: Annotated[str, Form(max_length=SHIPPING_FIELD_MAX)] = "",
    city: Annotated[str, Form(max_length=SHIPPING_FIELD_MAX)] = "",
    postal_code: Annotated[str, Form(max_length=SHIPPING_FIELD_MAX)] = "",
    country: Annotated[str, Form(max_length=SHIPPING_FIELD_MAX)] = "",
) -> Response:
    """Hand the basket to checkout with the shipping address; show the accepted request."""
    assert visitor.token is not None
    values = {
        "full_name": full_name.strip(), "street": street.strip(), "city": city.strip(),
        "postal_code": postal_code.strip(), "country": country.strip(),
    }  # fmt: skip
    key = idempotency_key if REQUEST_ID.match(idempotency_key) else str(uuid.uuid4())
    missing = [label for name, label, _ in SHIPPING_FIELDS if not values[name]]
    if missing:
        error = "Please fill in: " + ", ".join(missing) + "."
        return await _checkout_page(request, backends, visitor.token, values, key, error, 400)
    try:
        request_id = await backends.checkout(visitor.token, Shipping(**values), key)
    except BackendError as exc:
        # The same key again: if the first attempt did get through, a retry will not repeat it.
        status = exc.status if exc.status < 500 else 503
        return await _checkout_page(
            request, backends, visitor.token, values, key, exc.message, status
        )
    return redirect(request, "/checkout/done" + _query(request=request_id))


@router.get("/checkout/done")
async def read_checkout_done(
    request: Request,
    backends: BackendsDep,
    visitor: SignedInDep,
    request_id: Annotated[str, Query(alias="request", max_length=64)] = "",
) -> Response:
    """The confirmation, with what became of the checkout so far: accepted (the page looks
    again every two seconds), reserved, or rejected with the reasons and what went back into
    the basket."""
    assert visitor.token is not None
    known = request_id if REQUEST_ID.match(request_id) else None
    outcome, error = None, None
    if known is not None:
        try:
            outcome = await backends.checkout_status(visitor.token, known)
        except BackendError as exc:
            error = exc.message
    names: dict[int, str] = {}
    if outcome is not None and outcome.shortages:
        names = await _product_names(backends, [s.product_id for s in outcome.shortages])
    return render(
        request, "checkout_done.html",
        {"request_id": known, "outcome": outcome, "error": error, "names": names},
    )  # fmt: skip


async def _product_names(backends: Backends, ids: list[int]) -> dict[int, str]:
    """Names for the products a rejection names; one the catalog no longer has is left out."""
    names = {}
    for product_id in ids:
        try:
            names[product_id] = (await backends.get_item(product_id)).name
        except BackendError:
            continue
    return names


# -- admin ----------------------------------------------------------------------------------
@router.get("/admin")
async def read_admin(
    request: Request,
    backends: BackendsDep,
    _admin: AdminDep,
    q: OptionalText = None,
    page: OptionalText = None,
) -> Response:
    """Change a product's price or stock (admin only)."""
    text = (q or "").strip()[:SEARCH_MAX]
    page_no = _positive(page) or 1
    listing = await backends.list_items(page_no - 1, ADMIN_PAGE_SIZE, text=text)
    pages = max(1, math.ceil(listing.count / ADMIN_PAGE_SIZE))

    def link(to_page: int) -> str:
        return "/admin" + _query(q=text, page=to_page if to_page > 1 else None)

    return render(
        request, "admin.html",
        {"listing": listing, "q": text, "page_no": page_no, "pages": pages, "link": link,
         "here": _here(request)},
    )  # fmt: skip


def _price(text: str) -> Decimal | None:
    try:
        value = Decimal(text.strip().removeprefix("$").replace(",", ""))
    except InvalidOperation:
        return None
    if not value.is_finite() or value < 0 or value != value.quantize(Decimal("0.01")):
        return None
    # Plain text with two decimals ("10.00", never "1E+1" or "-0"): the form the catalog takes.
    return value.quantize(Decimal("0.01")) + 0


def _stock(text: str) -> int | None:
    value = int(text.strip()) if text.strip().isdigit() else None
    return value if value is not None and value <= INT32_MAX else None


def admin_changes(
    loaded: tuple[Decimal, int], submitted: tuple[Decimal, int]
) -> dict[str, str | int]:
    """The merge patch for one admin row: only what the admin changed from what the page
    showed. A field left as it was is left out, so the catalog keeps whatever it has now."""
    (old_price, old_stock), (price, stock) = loaded, submitted
    changes: dict[str, str | int] = {}
    if price != old_price:
        changes["price"] = str(price)
    if stock != old_stock:
        changes["availableStock"] = stock
    return changes


@router.post("/admin/items/{item_id}", dependencies=[CsrfChecked])
async def update_item(
    request: Request,
    item_id: ItemId,
    backends: BackendsDep,
    admin: AdminDep,
    price: Annotated[str, Form(max_length=30)] = "",
    available_stock: Annotated[str, Form(max_length=20)] = "",
    loaded_price: Annotated[str, Form(max_length=30)] = "",
    loaded_stock: Annotated[str, Form(max_length=20)] = "",
    version: Annotated[str, Form(max_length=20)] = "",
    next_url: NextField = None,
) -> Response:
    """Save what the admin changed in a row, and only that, if the product is still at the
    version the page was loaded at; otherwise say what it is now."""
    assert admin.token is not None
    back = local_path(next_url, "/admin")
    new_price, stock = _price(price), _stock(available_stock)
    if new_price is None or stock is None:
        message = "A price is a number of at least 0 with up to two decimals; stock a whole number."
        return redirect(request, back, ("error", message))
    old_price, old_stock = _price(loaded_price), _stock(loaded_stock)
    loaded_version = _positive(version)
    if old_price is None or old_stock is None or loaded_version is None:
        return redirect(request, back, ("error", "That form was out of date; here it is again."))
    changes = admin_changes((old_price, old_stock), (new_price, stock))
    if not changes:
        return redirect(request, back, ("info", "Nothing to save: price and stock are as loaded."))
    try:
        saved = await backends.patch_item(admin.token, item_id, changes, loaded_version)
    except ItemChanged:
        return redirect(request, back, ("error", await _changed_meanwhile(backends, item_id)))
    except BackendError as exc:
        return redirect(request, back, ("error", exc.message))
    done = []
    if "price" in changes:
        done.append(f"price {money(old_price)} → {money(saved.price)}")
    if "availableStock" in changes:
        done.append(f"stock {old_stock} → {saved.available_stock}")
    return redirect(request, back, ("info", f"Saved {saved.name}: {', '.join(done)}."))


async def _changed_meanwhile(backends: Backends, item_id: int) -> str:
    try:
        now = await backends.get_item(item_id)
    except BackendError as exc:
        return f"The product changed while this page was open; nothing was saved. {exc.message}"
    return (
        f"{now.name} changed while this page was open (a checkout reserved stock, or another "
        f"admin saved): nothing was saved. It now has price {money(now.price)} and stock "
        f"{now.available_stock}, as the form shows; make your change again."
    )
