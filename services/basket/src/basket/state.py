"""The one I/O module: every call this service makes goes through its Dapr sidecar.

State calls use the Dapr state HTTP API (`/v1.0/state/...`), product lookups Dapr service
invocation (`/v1.0/invoke/catalog-api/method/...`), checkout events the publish API, all through
the one client every service shares (`eshop_common.sidecar.Sidecar`, one aiohttp session;
docs/performance.md measured it against httpx and the Dapr SDK). Nothing here knows which store is
behind the `statestore` component.

Each failure names the hop that failed: the sidecar itself (`SidecarUnavailable`), the state
store, the catalog or the pub/sub behind it. State calls pass through a circuit breaker that counts
only outages: an ETag conflict is an answer, not a failure (docs/08-resilience.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from eshop_common.problems import ServiceUnavailable
from eshop_common.sidecar import (
    Concurrency,
    Consistency,
    DaprError,
    NotJson,
    Sidecar,
    SidecarUnavailable,
    StateConflict,
    StateEntry,
)

__all__ = ["DaprSidecar", "ETagMismatch", "NotJson", "StateEntry", "StoreBreaker"]


class StateStoreUnavailable(ServiceUnavailable):
    type = "/problems/state-store-unavailable"


class CatalogUnavailable(ServiceUnavailable):
    type = "/problems/catalog-unavailable"


class EventBusUnavailable(ServiceUnavailable):
    type = "/problems/pubsub-unavailable"


class ETagMismatch(Exception):
    """Somebody else saved the key since we read it (or created it since we saw none)."""


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
    """The basket's calls through its sidecar, on the shared client (`eshop_common.sidecar`):
    state calls behind the store breaker, product lookups, checkout events. Made in the
    lifespan around the service's one `Sidecar`."""

    def __init__(
        self,
        sidecar: Sidecar,
        *,
        store: str,
        catalog_app_id: str,
        pubsub: str,
        breaker: StoreBreaker,
    ) -> None:
        self._sidecar = sidecar
        self._store = store
        self._catalog = catalog_app_id
        self._pubsub = pubsub
        self._breaker = breaker

    async def get_state(self, key: str, *, consistency: Consistency) -> StateEntry:
        """The entry under `key`; `StateEntry(None, None)` when there is none, its value
        `NotJson` when it is not JSON. Raises StateStoreUnavailable or SidecarUnavailable (503)."""
        async with self._breaker.guard():
            try:
                return await self._sidecar.get_state(self._store, key, consistency=consistency)
            except DaprError as exc:
                raise StateStoreUnavailable(f"The state store could not be read ({exc}).") from None

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
        metadata = {"ttlInSeconds": str(ttl_seconds)} if ttl_seconds is not None else None
        async with self._breaker.guard():
            try:
                await self._sidecar.save_state(
                    self._store, key, value, etag=etag, concurrency=concurrency,
                    consistency=consistency, metadata=metadata,
                )  # fmt: skip
                return
            except StateConflict:
                raise ETagMismatch(key) from None
            except DaprError as exc:
                creating = etag is None and concurrency == "first-write" and exc.status == 500
                if not creating:
                    raise StateStoreUnavailable(
                        f"The state store could not be written ({exc})."
                    ) from None
                failure = exc
        # A first-write save without an ETag means "create"; when the key appeared meanwhile,
        # Redis and PostgreSQL report it as a plain save error, not 409. Tell that apart from
        # an outage by looking at the key.
        if (await self.get_state(key, consistency="strong")).etag is not None:
            raise ETagMismatch(key)
        raise StateStoreUnavailable(f"The state store could not be written ({failure}).")

    async def get_bulk_state(self, keys: list[str]) -> dict[str, StateEntry]:
        """Several keys in one call to the sidecar; keys that do not exist come back empty.
        Raises StateStoreUnavailable or SidecarUnavailable (503)."""
        async with self._breaker.guard():
            try:
                return await self._sidecar.get_bulk_state(self._store, keys)
            except DaprError as exc:
                raise StateStoreUnavailable(f"The state store could not be read ({exc}).") from None

    async def publish(self, topic: str, data: Any, *, event_id: str, event_type: str) -> None:
        """Publish a CloudEvent whose id is `event_id`: subscribers deduplicate on it.
        Raises EventBusUnavailable or SidecarUnavailable (503)."""
        try:
            await self._sidecar.publish(
                self._pubsub, topic, data, cloudevent={"id": event_id, "type": event_type}
            )
        except DaprError as exc:
            raise EventBusUnavailable(f"The event could not be published ({exc}).") from None

    async def catalog_items(self, ids: list[int]) -> list[dict[str, Any]]:
        """Current catalog data for `ids` by service invocation; unknown ids are left out.
        Raises CatalogUnavailable or SidecarUnavailable (503)."""
        try:
            resp = await self._sidecar.invoke(
                self._catalog, "api/catalog/items/by-ids", query={"ids": ",".join(map(str, ids))}
            )
        except SidecarUnavailable as exc:
            # Timed out: the sidecar took the call, and the catalog behind it (retried by the
            # sidecar's resiliency policy) did not answer in time.
            if exc.timed_out:
                raise CatalogUnavailable("The catalog did not answer in time.") from None
            raise
        if resp.status != 200:
            raise CatalogUnavailable(f"The catalog could not be asked ({resp.dapr_error()}).")
        try:
            items = resp.json()
        except (ValueError, UnicodeDecodeError):
            items = None
        if not isinstance(items, list) or not all(
            isinstance(item, dict) and isinstance(item.get("id"), int) for item in items
        ):
            raise CatalogUnavailable("The catalog's answer was not a list of items.")
        return items

    async def is_ready(self) -> bool:
        return await self._sidecar.outbound_ready()
