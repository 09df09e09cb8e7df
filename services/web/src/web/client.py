"""The one I/O module: every call the storefront makes goes through its own Dapr sidecar.

Catalog and basket are reached by Dapr service invocation
(`/v1.0/invoke/<app id>/method/<path>`): the sidecar finds the target app's sidecar and forwards
the request, the user's `Authorization` header included. This module turns the answers into
models, and every failure into a `BackendError` whose message a person can read. The calls go
through the one sidecar client every service shares (`eshop_common.sidecar.Sidecar`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from eshop_common.sidecar import Sidecar, SidecarReply, SidecarUnavailable
from eshop_common.sidecar import json_body as _json
from web.config import Settings
from web.schemas import (
    Basket,
    CatalogItem,
    CatalogPage,
    CheckoutStatus,
    Named,
    Shipping,
)

T = TypeVar("T")

MERGE_PATCH = "application/merge-patch+json"
NAMED_LIST = TypeAdapter(list[Named])
CATALOG_PAGE = TypeAdapter(CatalogPage)
CATALOG_ITEM = TypeAdapter(CatalogItem)
BASKET = TypeAdapter(Basket)
CHECKOUT_STATUS = TypeAdapter(CheckoutStatus)
# Headers of a picture that the browser should see as the catalog sent them.
PICTURE_HEADERS = (
    "content-type", "etag", "last-modified", "cache-control",
    "content-security-policy", "x-content-type-options",
)  # fmt: skip


class BackendError(Exception):
    """An API answered with an error, or could not be reached; `message` is for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class BackendUnavailable(BackendError):
    def __init__(self, message: str) -> None:
        super().__init__(503, message)


class ItemChanged(BackendError):
    """The catalog item is no longer at the version the change was based on (412)."""

    def __init__(self, message: str) -> None:
        super().__init__(412, message)


@dataclass(frozen=True)
class BasketRead:
    basket: Basket
    etag: str | None
    stored: dict[str, Any]


@dataclass(frozen=True)
class Picture:
    status: int
    content: bytes
    headers: dict[str, str]


def make_sidecar(settings: Settings) -> Sidecar:
    """One long-lived client to the sidecar, opened in the lifespan; never one per request."""
    return Sidecar.from_settings(settings, owner="storefront")


def _service_name(app_id: str) -> str:
    return app_id.removesuffix("-api")


def error_message(app_id: str, resp: SidecarReply) -> str:
    """A sentence from an error answer: the API's problem detail, or what Dapr said went wrong."""
    service = _service_name(app_id)
    try:
        body = resp.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        # RFC 9457 problem details from the APIs.
        if isinstance(body.get("detail"), str) and body["detail"]:
            return str(body["detail"])
        if isinstance(body.get("title"), str) and "status" in body:
            return f"The {service} service answered: {body['title']}."
        # Dapr's own errors, when the call never reached the app.
        if isinstance(body.get("errorCode"), str):
            return (
                f"The {service} service could not be reached through Dapr "
                f"({body['errorCode']}). It may still be starting; try again in a moment."
            )
    return f"The {service} service answered with HTTP {resp.status}."


class Backends:
    """The catalog and basket APIs, each through `/v1.0/invoke/<app id>/method/...`."""

    def __init__(self, sidecar: Sidecar, settings: Settings) -> None:
        self._sidecar = sidecar
        self._catalog = settings.catalog_app_id
        self._basket = settings.basket_app_id

    @property
    def basket_app_id(self) -> str:
        return self._basket

    async def _call(
        self,
        method: str,
        app_id: str,
        path: str,
        *,
        token: str | None = None,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (),
    ) -> SidecarReply:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if json_body is not None:
            content = _json(json_body)
            sent["Content-Type"] = "application/json"
        try:
            resp = await self._sidecar.invoke(
                app_id, path, method=method, query=params, content=content, headers=sent
            )
        except SidecarUnavailable as exc:
            if exc.timed_out:
                raise BackendUnavailable(
                    f"The {_service_name(app_id)} service did not answer in time."
                ) from None
            raise BackendUnavailable(
                "The storefront's Dapr sidecar cannot be reached; is it running?"
            ) from None
        if resp.status >= 400 and resp.status not in ok:
            status = resp.status if resp.status < 500 else 503
            raise BackendError(status, error_message(app_id, resp))
        return resp

    @staticmethod
    def _parse(adapter: TypeAdapter[T], resp: SidecarReply, app_id: str) -> T:
        try:
            return adapter.validate_json(resp.body)
        except ValidationError:
            service = _service_name(app_id)
            raise BackendError(
                502, f"The {service} service sent an answer the storefront cannot read."
            ) from None

    # -- catalog ----------------------------------------------------------------------------
    async def list_items(
        self,
        page_index: int,
        page_size: int,
        *,
        brand_id: int | None = None,
        type_id: int | None = None,
        text: str | None = None,
    ) -> CatalogPage:
        params: dict[str, Any] = {"pageIndex": page_index, "pageSize": page_size}
        if brand_id is not None:
            params["brandId"] = brand_id
        if type_id is not None:
            params["typeId"] = type_id
        if text:
            params["q"] = text
        resp = await self._call("GET", self._catalog, "api/catalog/items", params=params)
        return self._parse(CATALOG_PAGE, resp, self._catalog)

    async def get_item(self, item_id: int) -> CatalogItem:
        resp = await self._call("GET", self._catalog, f"api/catalog/items/{item_id}")
        return self._parse(CATALOG_ITEM, resp, self._catalog)

    async def brands(self) -> list[Named]:
        resp = await self._call("GET", self._catalog, "api/catalog/brands")
        return self._parse(NAMED_LIST, resp, self._catalog)

    async def types(self) -> list[Named]:
        resp = await self._call("GET", self._catalog, "api/catalog/types")
        return self._parse(NAMED_LIST, resp, self._catalog)

    async def picture(self, item_id: int, if_none_match: str | None) -> Picture:
        headers = {"If-None-Match": if_none_match} if if_none_match else {}
        resp = await self._call(
            "GET", self._catalog, f"api/catalog/items/{item_id}/picture", headers=headers
        )
        kept = {
            name.lower(): value
            for name, value in resp.headers.items()
            if name.lower() in PICTURE_HEADERS
        }
        return Picture(resp.status, resp.body, kept)

    async def patch_item(
        self, token: str, item_id: int, changes: dict[str, Any], version: int
    ) -> CatalogItem:
        """Change only the fields in `changes` (a JSON merge patch), and only if the item is
        still at `version`; raises ItemChanged when it is not."""
        resp = await self._call(
            "PATCH", self._catalog, f"api/catalog/items/{item_id}", token=token,
            content=json.dumps(changes).encode(),
            headers={"Content-Type": MERGE_PATCH, "If-Match": f'"{version}"'},
            ok=(412,),
        )  # fmt: skip
        if resp.status == 412:
            raise ItemChanged(error_message(self._catalog, resp))
        return self._parse(CATALOG_ITEM, resp, self._catalog)

    # -- basket -----------------------------------------------------------------------------
    async def basket(self, token: str) -> BasketRead:
        resp = await self._call("GET", self._basket, "api/basket", token=token)
        basket: Basket = self._parse(BASKET, resp, self._basket)
        return BasketRead(basket, resp.etag, resp.json())

    async def add_to_basket(self, token: str, product_id: int, quantity: int) -> Basket:
        resp = await self._call(
            "POST", self._basket, "api/basket/items", token=token,
            json_body={"productId": product_id, "quantity": quantity},
        )  # fmt: skip
        return self._parse(BASKET, resp, self._basket)

    async def set_quantity(self, token: str, product_id: int, quantity: int) -> Basket:
        resp = await self._call(
            "PATCH", self._basket, f"api/basket/items/{product_id}", token=token,
            json_body={"quantity": quantity},
        )  # fmt: skip
        return self._parse(BASKET, resp, self._basket)

    async def remove_from_basket(self, token: str, product_id: int) -> Basket:
        resp = await self._call(
            "DELETE", self._basket, f"api/basket/items/{product_id}", token=token
        )
        return self._parse(BASKET, resp, self._basket)

    async def checkout(self, token: str, shipping: Shipping, idempotency_key: str) -> str:
        """Hand the basket to checkout; the answer is the id of the accepted request."""
        resp = await self._call(
            "POST", self._basket, "api/basket/checkout", token=token,
            json_body={"shipping": shipping.model_dump(mode="json", by_alias=True)},
            headers={"Idempotency-Key": idempotency_key},
        )  # fmt: skip
        try:
            request_id = resp.json()["requestId"]
        except (ValueError, KeyError, TypeError):
            request_id = None
        if not isinstance(request_id, str):
            raise BackendError(502, "The basket service accepted the checkout without an id.")
        return request_id

    async def checkout_status(self, token: str, request_id: str) -> CheckoutStatus | None:
        """What became of one of the buyer's checkouts; None when the basket does not know it."""
        resp = await self._call(
            "GET", self._basket, f"api/basket/checkouts/{request_id}", token=token, ok=(404,)
        )
        if resp.status == 404:
            return None
        return self._parse(CHECKOUT_STATUS, resp, self._basket)

    # -- the sidecar itself -----------------------------------------------------------------
    async def sidecar_ready(self) -> bool:
        return await self._sidecar.outbound_ready()
