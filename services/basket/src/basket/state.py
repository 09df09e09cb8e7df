"""The one I/O module: every call this service makes goes through its Dapr sidecar.

State calls use the Dapr state HTTP API (`/v1.0/state/...`), product lookups Dapr service
invocation (`/v1.0/invoke/catalog-api/method/...`), checkout events the publish API. Nothing here
knows which store is behind the `statestore` component. One aiohttp session carries every call
(docs/performance.md measured it against httpx).

Each failure names the hop that failed: the sidecar itself (`SidecarUnavailable`), the state
store, the catalog or the pub/sub behind it. State calls pass through a circuit breaker that counts
only outages: an ETag conflict is an answer, not a failure (docs/08-resilience.md).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import quote, urlencode

import aiohttp
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from eshop_common.problems import ServiceUnavailable

Consistency = Literal["strong", "eventual"]
Concurrency = Literal["first-write", "last-write"]

MAX_CONNECTIONS = 100
KEEPALIVE_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 2.0


class SidecarUnavailable(ServiceUnavailable):
    type = "/problems/sidecar-unavailable"


class StateStoreUnavailable(ServiceUnavailable):
    type = "/problems/state-store-unavailable"


class CatalogUnavailable(ServiceUnavailable):
    type = "/problems/catalog-unavailable"


class EventBusUnavailable(ServiceUnavailable):
    type = "/problems/pubsub-unavailable"


class ETagMismatch(Exception):
    """Somebody else saved the key since we read it (or created it since we saw none)."""


@dataclass(frozen=True, slots=True)
class NotJson:
    """A stored value that is not JSON; no model validates it, so it reads as unreadable."""

    raw: bytes


@dataclass(frozen=True, slots=True)
class StateEntry:
    value: Any | None
    etag: str | None


@dataclass(frozen=True, slots=True)
class SidecarReply:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _json_body(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


JSON_HEADERS = {"Content-Type": "application/json"}
OUTAGES = (SidecarUnavailable, StateStoreUnavailable)


class StoreBreaker:
    """A circuit breaker around state calls, inside this process. It opens after `threshold`
    outages in a row (sidecar unreachable, store errors) and then answers StateStoreUnavailable at
    once for `open_seconds`. Anything else that leaves a guarded block, above all ETagMismatch,
    counts as a success: one client's conflicts must not refuse every other buyer
    (docs/08-resilience.md). purgatory keeps the state."""

    CIRCUIT = "statestore"

    def __init__(self, threshold: int, open_seconds: float) -> None:
        self._breakers = AsyncCircuitBreakerFactory(
            default_threshold=threshold,
            default_ttl=open_seconds,
            exclude=[(BaseException, lambda exc: not isinstance(exc, OUTAGES))],
        )
        self._open_seconds = open_seconds
        self._last_outage: ServiceUnavailable = StateStoreUnavailable("The state store failed.")

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Run a state call. Raises, while the breaker is open, the kind of the last outage
        (SidecarUnavailable or StateStoreUnavailable, 503) without calling anything."""
        breaker = await self._breakers.get_breaker(self.CIRCUIT)
        try:
            await breaker.__aenter__()
        except OpenedState:
            last = self._last_outage
            raise type(last)(
                f"{last.detail} It failed repeatedly, so the basket service waits "
                f"{self._open_seconds:g}s before calling it again.",
                retry_after=max(1, round(self._open_seconds)),
            ) from None
        try:
            yield
        except BaseException as exc:
            if isinstance(exc, OUTAGES):
                self._last_outage = exc
            await breaker.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        await breaker.__aexit__(None, None, None)


class DaprSidecar:
    """The service's one client to its sidecar; made in the lifespan, closed on shutdown."""

    def __init__(
        self,
        base_url: str,
        *,
        api_token: str | None,
        timeout_seconds: float,
        store: str,
        catalog_app_id: str,
        pubsub: str,
        breaker: StoreBreaker,
    ) -> None:
        self._base_url = base_url
        self._headers = {"dapr-api-token": api_token} if api_token else {}
        # Each phase (waiting for a pooled connection, connecting, each read) has its own limit.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout_seconds, sock_connect=CONNECT_TIMEOUT_SECONDS,
            sock_read=timeout_seconds,
        )  # fmt: skip
        self._session: aiohttp.ClientSession | None = None
        self._store = store
        self._catalog = catalog_app_id
        self._pubsub = pubsub
        self._breaker = breaker

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE_SECONDS
            ),
            headers=self._headers,
            timeout=self._timeout,
            cookie_jar=aiohttp.DummyCookieJar(),  # the sidecar sets none; don't parse for them
            trust_env=False,
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        if self._session is not None:
            await self._session.close()

    async def _send(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        limit: aiohttp.ClientTimeout | None = None,
    ) -> tuple[SidecarReply, str | None]:
        """One request to the sidecar -> (reply, its ETag header). Raises SidecarUnavailable (503)
        when the sidecar refuses, drops or does not answer in time."""
        assert self._session is not None, "use DaprSidecar as an async context manager"
        try:
            async with self._session.request(
                method, self._base_url + url, data=content, headers=headers,
                timeout=limit or self._timeout,
            ) as resp:  # fmt: skip
                return SidecarReply(resp.status, await resp.read()), resp.headers.get("etag")
        except TimeoutError:
            raise SidecarUnavailable("The basket's Dapr sidecar did not answer in time.") from None
        except aiohttp.ClientError as exc:
            raise SidecarUnavailable(
                f"The basket's Dapr sidecar cannot be reached: {exc}."
            ) from None

    def _state_url(self, key: str) -> str:
        # Buyer ids are refused unless they are safe as one path segment (api.py); quoting is the
        # second line: no key can add a segment or a query.
        return f"/v1.0/state/{self._store}/{_segment(key)}"

    async def get_state(self, key: str, *, consistency: Consistency) -> StateEntry:
        """The entry under `key`; `StateEntry(None, None)` when there is none.
        Raises StateStoreUnavailable or SidecarUnavailable (503)."""
        async with self._breaker.guard():
            resp, etag = await self._send(
                "GET", f"{self._state_url(key)}?{urlencode({'consistency': consistency})}"
            )
            if resp.status == 204:
                return StateEntry(None, None)
            if resp.status != 200:
                raise StateStoreUnavailable(
                    f"The state store could not be read ({_dapr_error(resp)})."
                )
            try:
                return StateEntry(resp.json(), etag)
            except ValueError:  # written past the service (redis-cli, say): not even JSON
                return StateEntry(NotJson(resp.body), etag)

    async def save_state(
        self,
        key: str,
        value: Any,
        *,
        etag: str | None,
        consistency: Consistency,
        ttl_seconds: int | None,
        concurrency: Concurrency = "first-write",
    ) -> None:
        """Save `value` under `key`. With first-write, only over the entry whose ETag is `etag`,
        or, with `etag=None`, only if there is no entry yet. Raises ETagMismatch when that does
        not hold, StateStoreUnavailable or SidecarUnavailable (503) when the save fails."""
        item: dict[str, Any] = {
            "key": key,
            "value": value,
            "options": {"concurrency": concurrency, "consistency": consistency},
        }
        if ttl_seconds is not None:
            item["metadata"] = {"ttlInSeconds": str(ttl_seconds)}
        if etag is not None:
            item["etag"] = etag
        async with self._breaker.guard():
            resp, _ = await self._send(
                "POST", f"/v1.0/state/{self._store}", content=_json_body([item]),
                headers=JSON_HEADERS,
            )  # fmt: skip
            if resp.status in (200, 204):
                return
            if resp.status == 409:
                raise ETagMismatch(key)
            creating = etag is None and concurrency == "first-write" and resp.status == 500
            if not creating:
                raise StateStoreUnavailable(
                    f"The state store could not be written ({_dapr_error(resp)})."
                )
        # A first-write save without an ETag means "create"; when the key appeared meanwhile,
        # Redis and PostgreSQL report it as a plain save error, not 409. Tell that apart from
        # an outage by looking at the key.
        if (await self.get_state(key, consistency="strong")).etag is not None:
            raise ETagMismatch(key)
        raise StateStoreUnavailable(f"The state store could not be written ({_dapr_error(resp)}).")

    async def get_bulk_state(self, keys: list[str]) -> dict[str, StateEntry]:
        """Several keys in one call to the sidecar (https://docs.dapr.io/reference/api/state_api/
        #get-bulk-state): `{key: StateEntry}` for every key asked, `StateEntry(None, None)` for
        those that do not exist. Raises StateStoreUnavailable or SidecarUnavailable (503).

        A value that is not JSON makes daprd 1.18 answer the whole bulk read with an empty body
        (it cannot encode it); the keys are then read one by one, so only that key reads as
        NotJson."""
        async with self._breaker.guard():
            resp, _ = await self._send(
                "POST", f"/v1.0/state/{self._store}/bulk",
                content=_json_body({"keys": keys, "parallelism": 10}), headers=JSON_HEADERS,
            )  # fmt: skip
            if resp.status != 200:
                raise StateStoreUnavailable(
                    f"The state store could not be read ({_dapr_error(resp)})."
                )
            try:
                items = resp.json()
            except ValueError:
                items = None
            else:
                entries: dict[str, StateEntry] = {}
                for item in items:
                    if item.get("error"):
                        raise StateStoreUnavailable(
                            f"The state store could not be read ({item['error']})."
                        )
                    entries[item["key"]] = StateEntry(item.get("data"), item.get("etag"))
                return entries
        return {key: await self.get_state(key, consistency="eventual") for key in keys}

    async def publish(self, topic: str, data: Any, *, event_id: str, event_type: str) -> None:
        """Publish a CloudEvent whose id is `event_id`: subscribers deduplicate on it.
        Raises EventBusUnavailable or SidecarUnavailable (503)."""
        query = urlencode(
            {"metadata.cloudevent.id": event_id, "metadata.cloudevent.type": event_type}
        )
        resp, _ = await self._send(
            "POST", f"/v1.0/publish/{self._pubsub}/{topic}?{query}", content=_json_body(data),
            headers=JSON_HEADERS,
        )  # fmt: skip
        if resp.status != 204:
            raise EventBusUnavailable(f"The event could not be published ({_dapr_error(resp)}).")

    async def catalog_items(self, ids: list[int]) -> list[dict[str, Any]]:
        """Current catalog data for `ids` by service invocation; unknown ids are left out.
        Raises CatalogUnavailable or SidecarUnavailable (503)."""
        query = urlencode({"ids": ",".join(map(str, ids))})
        resp, _ = await self._send(
            "GET", f"/v1.0/invoke/{self._catalog}/method/api/catalog/items/by-ids?{query}"
        )
        if resp.status != 200:
            raise CatalogUnavailable(f"The catalog could not be asked ({_dapr_error(resp)}).")
        items: list[dict[str, Any]] = resp.json()
        return items

    async def is_ready(self) -> bool:
        try:
            resp, _ = await self._send(
                "GET", "/v1.0/healthz/outbound", limit=aiohttp.ClientTimeout(total=2.0)
            )
        except SidecarUnavailable:
            return False
        return resp.status == 204


def _segment(key: str) -> str:
    # Percent-encoded, so no key can add a path segment or a query. `+` too: daprd reads a `+`
    # in the key segment as a space, so `a+b` would be saved (the key travels in the body) but
    # read back as `a b`, and its second write would fail. `:` and `@` stay as they are.
    return quote(key, safe=":@")


def _dapr_error(resp: SidecarReply) -> str:
    try:
        body = resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"HTTP {resp.status}"
    if isinstance(body, dict) and "errorCode" in body:
        return f"HTTP {resp.status} {body['errorCode']}: {body.get('message', '')}"
    return f"HTTP {resp.status}"
