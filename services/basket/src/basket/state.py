"""The one I/O module: every call this service makes goes through its Dapr sidecar.

State calls use the Dapr state HTTP API (`/v1.0/state/...`); product lookups use Dapr service
invocation (`/v1.0/invoke/catalog-api/method/...`). Nothing here knows which store is behind
the `statestore` component.

The client to the sidecar is aiohttp. `DAPR_HTTP_TRANSPORT` swaps in httpx, on aiohttp's
transport or on its own, for comparison: per call the httpx API costs several times aiohttp's CPU
(URL parsing, header and cookie handling), which made it the largest cost of a basket read;
docs/performance.md has the figures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol, Self
from urllib.parse import urlencode

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from basket.config import Settings
from eshop_common.problems import ServiceUnavailable

Consistency = Literal["strong", "eventual"]
Concurrency = Literal["first-write", "last-write"]

MAX_CONNECTIONS = 100
KEEPALIVE_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 2.0


class StateStoreUnavailable(ServiceUnavailable):
    type = "/problems/state-store-unavailable"


class CatalogUnavailable(ServiceUnavailable):
    type = "/problems/catalog-unavailable"


class EventBusUnavailable(ServiceUnavailable):
    type = "/problems/pubsub-unavailable"


class ETagMismatch(Exception):
    """Somebody else saved the key since we read it (or created it since we saw none)."""


class ETagInvalid(Exception):
    """The store cannot even parse the ETag we sent."""


class SidecarUnreachable(Exception):
    """No answer from the sidecar: refused, reset, or (as `SidecarTimeout`) too slow."""


class SidecarTimeout(SidecarUnreachable):
    pass


@dataclass(frozen=True)
class StateEntry:
    value: Any | None
    etag: str | None


@dataclass(frozen=True, slots=True)
class SidecarReply:
    status_code: int
    etag: str | None
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class SidecarHttp(Protocol):
    """What `DaprSidecar` needs from an HTTP client: send one request, read the whole answer."""

    async def send(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout_seconds: float | None = None,
    ) -> SidecarReply: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...  # fmt: skip


def make_http_client(settings: Settings) -> SidecarHttp:
    """One long-lived client to the sidecar, made in the lifespan; never one per request."""
    headers = {}
    if settings.dapr_api_token:
        headers["dapr-api-token"] = settings.dapr_api_token.get_secret_value()
    if settings.dapr_http_transport == "aiohttp":
        return AiohttpSidecarHttp(settings.dapr_url, headers, settings.dapr_timeout_seconds)
    limits = httpx.Limits(
        max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
    )
    transport: httpx.AsyncBaseTransport
    if settings.dapr_http_transport == "httpx-aiohttp":
        transport = AiohttpTransport(limits=limits, trust_env=False)
    else:
        transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
    client = httpx.AsyncClient(
        base_url=settings.dapr_url,
        headers=headers,
        timeout=httpx.Timeout(settings.dapr_timeout_seconds, connect=CONNECT_TIMEOUT_SECONDS),
        transport=transport,
        trust_env=False,
    )
    return HttpxSidecarHttp(client)


def _aiohttp_timeout(seconds: float, connect: float) -> aiohttp.ClientTimeout:
    # httpx's meaning: each phase (waiting for a pooled connection, connecting, each read) has
    # its own limit, and there is no limit on the whole exchange.
    return aiohttp.ClientTimeout(
        total=None, connect=seconds, sock_connect=connect, sock_read=seconds
    )


class AiohttpSidecarHttp:
    def __init__(self, base_url: str, headers: dict[str, str], timeout_seconds: float) -> None:
        self._base_url = base_url
        self._timeout = _aiohttp_timeout(timeout_seconds, CONNECT_TIMEOUT_SECONDS)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE_SECONDS
            ),
            headers=headers,
            timeout=self._timeout,
            cookie_jar=aiohttp.DummyCookieJar(),  # the sidecar sets none; don't parse for them
            trust_env=False,
        )

    async def send(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout_seconds: float | None = None,
    ) -> SidecarReply:
        limit = self._timeout
        if timeout_seconds is not None:
            limit = _aiohttp_timeout(timeout_seconds, timeout_seconds)
        try:
            async with self._session.request(
                method, self._base_url + url, data=content, headers=headers, timeout=limit
            ) as resp:
                return SidecarReply(resp.status, resp.headers.get("etag"), await resp.read())
        except TimeoutError:
            raise SidecarTimeout from None
        except aiohttp.ClientError as exc:
            raise SidecarUnreachable(str(exc)) from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        await self._session.close()


class HttpxSidecarHttp:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def send(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout_seconds: float | None = None,
    ) -> SidecarReply:
        try:
            resp = await self._client.request(
                method, url, content=content, headers=headers,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout_seconds is None else timeout_seconds,
            )  # fmt: skip
        except httpx.TimeoutException:
            raise SidecarTimeout from None
        except httpx.TransportError as exc:
            raise SidecarUnreachable(str(exc)) from None
        return SidecarReply(resp.status_code, resp.headers.get("etag"), resp.content)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        await self._client.aclose()


def _json_body(value: Any) -> bytes:
    # Byte for byte what httpx's `json=` sends, whichever client carries it.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


JSON_HEADERS = {"Content-Type": "application/json"}


class DaprSidecar:
    def __init__(self, http: SidecarHttp, store: str, catalog_app_id: str, pubsub: str) -> None:
        self._http = http
        self._store = store
        self._catalog = catalog_app_id
        self._pubsub = pubsub

    async def _call(
        self,
        method: str,
        url: str,
        unavailable: type[ServiceUnavailable],
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> SidecarReply:
        try:
            return await self._http.send(method, url, content=content, headers=headers)
        except SidecarTimeout:
            raise unavailable("The Dapr sidecar did not answer in time.") from None
        except SidecarUnreachable as exc:
            raise unavailable(f"The Dapr sidecar cannot be reached: {exc}.") from None

    async def get_state(self, key: str, *, consistency: Consistency) -> StateEntry:
        resp = await self._call(
            "GET",
            f"/v1.0/state/{self._store}/{key}?{urlencode({'consistency': consistency})}",
            StateStoreUnavailable,
        )
        if resp.status_code == 204:
            return StateEntry(None, None)
        if resp.status_code != 200:
            raise StateStoreUnavailable(f"The state store could not be read ({_dapr_error(resp)}).")
        return StateEntry(resp.json(), resp.etag)

    async def save_state(
        self,
        key: str,
        value: Any,
        *,
        etag: str | None,
        concurrency: Concurrency,
        consistency: Consistency,
        ttl_seconds: int | None,
    ) -> None:
        item: dict[str, Any] = {
            "key": key,
            "value": value,
            "options": {"concurrency": concurrency, "consistency": consistency},
        }
        if ttl_seconds is not None:
            item["metadata"] = {"ttlInSeconds": str(ttl_seconds)}
        if etag is not None:
            item["etag"] = etag
        resp = await self._call(
            "POST",
            f"/v1.0/state/{self._store}",
            StateStoreUnavailable,
            content=_json_body([item]),
            headers=JSON_HEADERS,
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
        query = urlencode({"concurrency": "first-write", "consistency": "strong"})
        resp = await self._call(
            "DELETE", f"/v1.0/state/{self._store}/{key}?{query}", StateStoreUnavailable,
            headers=headers,
        )  # fmt: skip
        if resp.status_code in (200, 204):
            return
        if resp.status_code == 409:
            raise ETagMismatch(key)
        if resp.status_code == 400 and etag is not None:
            raise ETagInvalid(etag)
        raise StateStoreUnavailable(f"The state store could not be written ({_dapr_error(resp)}).")

    async def get_bulk_state(self, keys: list[str]) -> dict[str, StateEntry]:
        """Several keys in one call to the sidecar; keys that do not exist come back empty."""
        resp = await self._call(
            "POST",
            f"/v1.0/state/{self._store}/bulk",
            StateStoreUnavailable,
            content=_json_body({"keys": keys, "parallelism": 10}),
            headers=JSON_HEADERS,
        )
        if resp.status_code != 200:
            raise StateStoreUnavailable(f"The state store could not be read ({_dapr_error(resp)}).")
        entries: dict[str, StateEntry] = {}
        for item in resp.json():
            if item.get("error"):
                raise StateStoreUnavailable(f"The state store could not be read ({item['error']}).")
            entries[item["key"]] = StateEntry(item.get("data"), item.get("etag"))
        return entries

    async def publish(self, topic: str, data: Any, *, event_id: str, event_type: str) -> None:
        """Publish a CloudEvent whose id is `event_id`: subscribers deduplicate on it."""
        query = urlencode(
            {"metadata.cloudevent.id": event_id, "metadata.cloudevent.type": event_type}
        )
        resp = await self._call(
            "POST",
            f"/v1.0/publish/{self._pubsub}/{topic}?{query}",
            EventBusUnavailable,
            content=_json_body(data),
            headers=JSON_HEADERS,
        )
        if resp.status_code != 204:
            raise EventBusUnavailable(f"The event could not be published ({_dapr_error(resp)}).")

    async def catalog_items(self, ids: list[int]) -> list[dict[str, Any]]:
        """Current catalog data for `ids` by service invocation; unknown ids are left out."""
        query = urlencode({"ids": ",".join(map(str, ids))})
        resp = await self._call(
            "GET",
            f"/v1.0/invoke/{self._catalog}/method/api/catalog/items/by-ids?{query}",
            CatalogUnavailable,
        )
        if resp.status_code != 200:
            raise CatalogUnavailable(f"The catalog could not be asked ({_dapr_error(resp)}).")
        items: list[dict[str, Any]] = resp.json()
        return items

    async def is_ready(self) -> bool:
        try:
            resp = await self._http.send("GET", "/v1.0/healthz/outbound", timeout_seconds=2.0)
        except SidecarUnreachable:
            return False
        return resp.status_code == 204


def _dapr_error(resp: SidecarReply) -> str:
    try:
        body = resp.json()
    except json.JSONDecodeError:
        return f"HTTP {resp.status_code}"
    if isinstance(body, dict) and "errorCode" in body:
        return f"HTTP {resp.status_code} {body['errorCode']}: {body.get('message', '')}"
    return f"HTTP {resp.status_code}"
