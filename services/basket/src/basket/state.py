"""The one I/O module: every call this service makes goes through its Dapr sidecar.

State calls use the Dapr state HTTP API (`/v1.0/state/...`); product lookups use Dapr service
invocation (`/v1.0/invoke/catalog-api/method/...`). Nothing here knows which store is behind
the `statestore` component.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from httpx_aiohttp import AiohttpTransport

from basket.config import Settings
from eshop_common.problems import ServiceUnavailable

Consistency = Literal["strong", "eventual"]
Concurrency = Literal["first-write", "last-write"]


class StateStoreUnavailable(ServiceUnavailable):
    type = "/problems/state-store-unavailable"


class CatalogUnavailable(ServiceUnavailable):
    type = "/problems/catalog-unavailable"


class ETagMismatch(Exception):
    """Somebody else saved the key since we read it (or created it since we saw none)."""


class ETagInvalid(Exception):
    """The store cannot even parse the ETag we sent."""


@dataclass(frozen=True)
class StateEntry:
    value: Any | None
    etag: str | None


def make_http_client(settings: Settings) -> httpx.AsyncClient:
    """One long-lived client to the sidecar, made in the lifespan; never one per request."""
    headers = {}
    if settings.dapr_api_token:
        headers["dapr-api-token"] = settings.dapr_api_token.get_secret_value()
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    transport: httpx.AsyncBaseTransport
    if settings.dapr_http_transport == "aiohttp":
        transport = AiohttpTransport(limits=limits, trust_env=False)
    else:
        transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
    return httpx.AsyncClient(
        base_url=settings.dapr_url,
        headers=headers,
        timeout=httpx.Timeout(settings.dapr_timeout_seconds, connect=2.0),
        transport=transport,
        trust_env=False,
    )


class DaprSidecar:
    def __init__(self, http: httpx.AsyncClient, store: str, catalog_app_id: str) -> None:
        self._http = http
        self._store = store
        self._catalog = catalog_app_id

    async def _call(
        self, method: str, url: str, unavailable: type[ServiceUnavailable], **kwargs: Any
    ) -> httpx.Response:
        try:
            return await self._http.request(method, url, **kwargs)
        except httpx.TimeoutException:
            raise unavailable("The Dapr sidecar did not answer in time.") from None
        except httpx.TransportError as exc:
            raise unavailable(f"The Dapr sidecar cannot be reached: {exc}.") from None

    async def get_state(self, key: str, *, consistency: Consistency) -> StateEntry:
        resp = await self._call(
            "GET",
            f"/v1.0/state/{self._store}/{key}",
            StateStoreUnavailable,
            params={"consistency": consistency},
        )
        if resp.status_code == 204:
            return StateEntry(None, None)
        if resp.status_code != 200:
            raise StateStoreUnavailable(f"The state store could not be read ({_dapr_error(resp)}).")
        return StateEntry(resp.json(), resp.headers.get("etag"))

    async def save_state(
        self,
        key: str,
        value: Any,
        *,
        etag: str | None,
        concurrency: Concurrency,
        consistency: Consistency,
        ttl_seconds: int,
    ) -> None:
        item: dict[str, Any] = {
            "key": key,
            "value": value,
            "options": {"concurrency": concurrency, "consistency": consistency},
            "metadata": {"ttlInSeconds": str(ttl_seconds)},
        }
        if etag is not None:
            item["etag"] = etag
        resp = await self._call(
            "POST", f"/v1.0/state/{self._store}", StateStoreUnavailable, json=[item]
        )
        if resp.status_code in (200, 204):
            return
        if resp.status_code == 409:
            raise ETagMismatch(key)
        if resp.status_code == 400 and etag is not None:
            raise ETagInvalid(etag)
        # A first-write save without an ETag means "create"; when the key appeared meanwhile,
        # Redis and PostgreSQL report it as a plain save error, not 409. Tell that apart from
        # an outage by looking at the key.
        creating = etag is None and concurrency == "first-write" and resp.status_code == 500
        if creating and (await self.get_state(key, consistency="strong")).etag is not None:
            raise ETagMismatch(key)
        raise StateStoreUnavailable(f"The state store could not be written ({_dapr_error(resp)}).")

    async def delete_state(self, key: str, *, etag: str | None) -> None:
        headers = {"If-Match": etag} if etag is not None else {}
        resp = await self._call(
            "DELETE",
            f"/v1.0/state/{self._store}/{key}",
            StateStoreUnavailable,
            headers=headers,
            params={"concurrency": "first-write", "consistency": "strong"},
        )
        if resp.status_code in (200, 204):
            return
        if resp.status_code == 409:
            raise ETagMismatch(key)
        if resp.status_code == 400 and etag is not None:
            raise ETagInvalid(etag)
        raise StateStoreUnavailable(f"The state store could not be written ({_dapr_error(resp)}).")

    async def catalog_items(self, ids: list[int]) -> list[dict[str, Any]]:
        """Current catalog data for `ids` by service invocation; unknown ids are left out."""
        resp = await self._call(
            "GET",
            f"/v1.0/invoke/{self._catalog}/method/api/catalog/items/by-ids",
            CatalogUnavailable,
            params={"ids": ",".join(map(str, ids))},
        )
        if resp.status_code != 200:
            raise CatalogUnavailable(f"The catalog could not be asked ({_dapr_error(resp)}).")
        items: list[dict[str, Any]] = resp.json()
        return items

    async def is_ready(self) -> bool:
        try:
            resp = await self._http.get("/v1.0/healthz/outbound", timeout=2.0)
        except httpx.HTTPError:
            return False
        return resp.status_code == 204


def _dapr_error(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except json.JSONDecodeError:
        return f"HTTP {resp.status_code}"
    if isinstance(body, dict) and "errorCode" in body:
        return f"HTTP {resp.status_code} {body['errorCode']}: {body.get('message', '')}"
    return f"HTTP {resp.status_code}"
