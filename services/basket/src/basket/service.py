"""Basket rules: whole-basket read-modify-write under optimistic concurrency, conditional
requests (RFC 9110 §13), checkout once per basket version, idempotency keys."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
import weakref
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID, uuid5

from cachetools import LRUCache
from pydantic import BaseModel, ValidationError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from basket import metrics
from basket.config import Settings
from basket.schemas import (
    CHECKOUTS_KEPT,
    MAX_QUANTITY,
    REVISIONS_KEPT,
    Basket,
    BasketItem,
    BasketItemAdd,
    CheckoutLine,
    CheckoutRecord,
    CheckoutStatus,
    IdempotencyRecord,
    IdempotentReply,
    OutboxEntry,
    PendingOutboxes,
    ProductDeleted,
    ProductPrice,
    ProductPriceChanged,
    Shipping,
    StockReservationRejected,
    StockReserved,
    UserCheckoutAccepted,
    new_revision,
)
from basket.state import DaprSidecar, ETagMismatch, StateEntry
from eshop_common.conditions import NONE, ConditionFailed, Preconditions
from eshop_common.problems import (
    BadRequest,
    Conflict,
    NotFound,
    ServiceUnavailable,
    UnprocessableContent,
)

# What a 412 tells the client to do (RFC 9110 §13.1.1, §13.1.2).
STALE_BASKET = (
    "The basket is not in the state this request's If-Match / If-None-Match requires; read it "
    "again (GET /api/basket gives its current ETag)."
)


class BasketConflict(Conflict):
    type = "/problems/basket-conflict"


class AlreadyCheckedOut(Conflict):
    type = "/problems/already-checked-out"


class IdempotencyKeyInUse(Conflict):
    type = "/problems/idempotency-key-in-use"


class IdempotencyKeyReused(UnprocessableContent):
    type = "/problems/idempotency-key-reused"


class ProductNotFound(BadRequest):
    type = "/problems/unknown-product"


class BasketLimitExceeded(UnprocessableContent):
    type = "/problems/basket-limit"


class EmptyBasket(BadRequest):
    type = "/problems/empty-basket"


class ProductUnavailable(Conflict):
    type = "/problems/product-unavailable"


class UnreadableBasket(Conflict):
    type = "/problems/unreadable-basket"


class OutcomeKnown(Exception):
    """The checkout's outcome is recorded already (a repeated event), or the basket no longer
    remembers the checkout."""


CHECKOUT_TOPIC = "user-checkout-accepted"
# How long a retry waits for the first request with its Idempotency-Key, running elsewhere.
IN_FLIGHT_WAIT_SECONDS = 2.0
# A checkout's event younger than this is left to the request that committed it.
OUTBOX_GRACE_SECONDS = 5.0
# How many buyers' product ids one process remembers, so that a read fetches the basket and its
# lines' price entries in one call to the sidecar (docs/performance.md).
LINES_REMEMBERED = 4096
OUTBOX_RETRY_MAX_SECONDS = 60.0
CHECKOUT_NAMESPACE = UUID("0b8f3c52-6f0e-4f57-9d7e-2c1c5cbb7a11")

Change = Callable[[Basket], Basket]
M = TypeVar("M", bound=BaseModel)
log = logging.getLogger(__name__)


def state_key(buyer_id: str) -> str:
    # Dapr prefixes it with the app id: the stored key is `basket-api||<buyerId>`.
    return buyer_id


def price_key(product_id: int) -> str:
    # Buyer ids never contain ':' (see api.py), so no buyer's basket can take this key.
    return f"product-price:{product_id}"


OUTBOX_SHARDS = 16


def pending_key(buyer_id: str) -> str:
    """The registry shard that lists this buyer when its basket may hold an unpublished
    checkout (`outbox-pending:0` to `outbox-pending:15`)."""
    return f"outbox-pending:{zlib.crc32(buyer_id.encode()) % OUTBOX_SHARDS}"


def idempotency_key(buyer_id: str, key: str) -> str:
    return f"idempotency:{buyer_id}:{key}"


def checkout_id(buyer_id: str, revision: str) -> str:
    """The checkout's request id, and its event's id: one per basket version, so every checkout
    of the same version (concurrent, retried, on any replica) publishes the same id and the
    catalog reserves stock once."""
    return str(uuid5(CHECKOUT_NAMESPACE, f"{buyer_id}:{revision}"))


def _stored(model: BaseModel) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _backoff(attempt: int) -> float:
    # Full jitter, 5 ms doubling up to 200 ms: two replicas that collided do not collide again.
    return random.uniform(0, min(0.2, 0.005 * 2**attempt))  # noqa: S311 - not a secret


@dataclass(frozen=True, slots=True)
class RequestKey:
    """A request's Idempotency-Key, and the fingerprint of the request it came with."""

    key: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Saved:
    """A basket as it was just saved; `etag` is its entity tag (the revision)."""

    basket: Basket

    @property
    def etag(self) -> str:
        return self.basket.revision


class NothingToSave(Exception):
    """Every change of a batch was refused."""


class Batch:
    """Unconditional changes to one buyer's basket that arrived while an earlier write for that
    buyer held the lock: one read-modify-write applies them all, one after the other, each to
    the result of the one before. `apply` is itself a pure `Basket -> Basket` change; a change
    that raises is left out (on a copy, so it leaves nothing half done) and its request gets the
    error, the others the saved basket."""

    def __init__(self, check: Callable[[Basket], None]) -> None:
        self._check = check
        self.entries: list[tuple[Change, asyncio.Future[Saved]]] = []
        self.refused: dict[int, Exception] = {}

    def apply(self, basket: Basket) -> Basket:
        self.refused = {}
        for i, (change, _) in enumerate(self.entries):
            try:
                changed = change(basket.model_copy(deep=True))
                self._check(changed)
            except Exception as exc:  # the request's own error: 404, 422...
                self.refused[i] = exc
                continue
            basket = changed
        if len(self.refused) == len(self.entries):
            raise NothingToSave
        return basket

    def settle(self, saved: Saved | None, error: BaseException | None = None) -> None:
        for i, (_, future) in enumerate(self.entries):
            if future.done():
                continue
            if i in self.refused:
                future.set_exception(self.refused[i])
            elif error is not None:
                future.set_exception(error)
            else:
                assert saved is not None
                future.set_result(saved)


class ProductLookups:
    """Catalog lookups by id. Lookups that arrive while one is in flight share the next call
    (`by-ids` takes up to BY_IDS_MAX ids), so a burst of adds costs one catalog round trip per
    burst, not one per add; an answer is never older than the call that carries it."""

    BY_IDS_MAX = 100

    def __init__(self, fetch: Callable[[list[int]], Awaitable[list[dict[str, Any]]]]) -> None:
        self._fetch = fetch
        self._in_flight = asyncio.Lock()
        self._next: dict[int, asyncio.Future[dict[str, Any] | None]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, ids: list[int]) -> dict[int, dict[str, Any] | None]:
        """The catalog's data for each id (None: no such product). Raises what `fetch` raises."""
        pending = self._next
        if pending is None or len(pending.keys() | set(ids)) > self.BY_IDS_MAX:
            pending = self._next = {}
            task = asyncio.create_task(self._call(pending))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        loop = asyncio.get_running_loop()
        futures = [pending.setdefault(i, loop.create_future()) for i in ids]
        return dict(zip(ids, await asyncio.gather(*futures), strict=True))

    async def _call(self, pending: dict[int, asyncio.Future[dict[str, Any] | None]]) -> None:
        async with self._in_flight:
            if self._next is pending:
                self._next = None  # closed: what arrives from now on goes into the next call
            try:
                found = {item["id"]: item for item in await self._fetch(list(pending))}
            except BaseException as exc:
                for future in pending.values():
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                return
            for product_id, future in pending.items():
                if not future.done():
                    future.set_result(found.get(product_id))


class KeyLocks:
    """One asyncio lock per key, alive while someone holds or waits for it: a buyer's writes
    inside this process take turns instead of failing each other's ETag checks."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        async with lock:
            yield


class BasketService:
    def __init__(self, sidecar: DaprSidecar, settings: Settings) -> None:
        self._sidecar = sidecar
        self._settings = settings
        self._locks = KeyLocks()
        self._batches: dict[str, Batch] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sending: dict[str, asyncio.Task[None]] = {}
        self._lookups = ProductLookups(sidecar.catalog_items)
        self._lines_seen: LRUCache[str, tuple[int, ...]] = LRUCache(LINES_REMEMBERED)

    async def get(self, buyer_id: str) -> tuple[Basket, str | None]:
        """The buyer's basket with current prices, and its ETag (None: nothing is stored).

        One bulk read fetches the basket together with the price entries of the lines this
        process last saw in it: a second call is made only for lines it did not know about (the
        first read in this process, a write through another replica). Only the number of calls
        depends on that guess, never what the read returns. A bulk read is eventually consistent,
        which is enough to show a basket: the next write checks the ETag anyway."""
        key = state_key(buyer_id)
        guessed = self._lines_seen.get(buyer_id, ())
        entries = await self._sidecar.get_bulk_state([key, *map(price_key, guessed)])
        entry = entries.get(key) or StateEntry(None, None)
        stored = self._basket(buyer_id, entry.value)
        self._lines_seen[buyer_id] = tuple(item.product_id for item in stored.items)
        self._send_outbox(stored)  # what a crashed checkout left unsent
        flagged = _unavailable_lines(stored)
        basket = await self._with_current_prices(stored, entries)
        self._remember_unavailable(basket, flagged)
        return basket, basket.revision if entry.value is not None else None

    async def add_item(
        self, buyer_id: str, line: BasketItemAdd, conditions: Preconditions = NONE
    ) -> Saved:
        """Add `line` (name and price from the catalog). Raises ProductNotFound (400),
        BasketLimitExceeded (422), and what `_update` raises."""
        (product,) = await self._products([line.product_id])

        def add(basket: Basket) -> Basket:
            for item in basket.items:
                if item.product_id == line.product_id:
                    item.quantity = _checked_quantity(item.quantity + line.quantity)
                    _reprice(item, product)
                    return basket
            basket.items.append(_new_item(product, line.quantity))
            return basket

        return await self._update(buyer_id, add, conditions)

    async def set_quantity(
        self, buyer_id: str, product_id: int, quantity: int, conditions: Preconditions = NONE
    ) -> Saved:
        """Raises NotFound (404) when the product is not in the basket, ProductUnavailable
        (409) when it would raise the quantity of a product the catalog deleted."""
        deleted = product_id in await self._deleted_products([product_id])

        def change(basket: Basket) -> Basket:
            line = _line(basket, product_id)
            if (deleted or line.unavailable) and quantity > line.quantity:
                raise _unavailable([product_id])
            line.quantity = quantity
            return basket

        return await self._update(buyer_id, change, conditions)

    async def remove_item(
        self, buyer_id: str, product_id: int, conditions: Preconditions = NONE
    ) -> Saved:
        """Raises NotFound (404) when the product is not in the basket."""

        def remove(basket: Basket) -> Basket:
            basket.items.remove(_line(basket, product_id))
            return basket

        return await self._update(buyer_id, remove, conditions)

    async def replace(
        self, buyer_id: str, lines: list[BasketItemAdd], conditions: Preconditions = NONE
    ) -> Saved:
        """Replace every line. Raises UnprocessableContent (422) for a product given twice or too
        many lines, ProductNotFound (400), and what `_update` raises."""
        ids = [line.product_id for line in lines]
        if len(set(ids)) != len(ids):
            raise UnprocessableContent(
                "items: a product may appear only once.",
                errors=[{"field": "items", "in": "body", "message": "duplicate productId"}],
            )
        self._check_lines(len(lines))
        products = {p["id"]: p for p in await self._products(ids)} if ids else {}

        def replace_lines(basket: Basket) -> Basket:
            basket.items = [_new_item(products[line.product_id], line.quantity) for line in lines]
            return basket

        return await self._update(buyer_id, replace_lines, conditions, replaces=True)

    async def empty(self, buyer_id: str, conditions: Preconditions = NONE) -> Saved:
        """DELETE /api/basket. The basket is saved empty, never deleted from the store: its
        store version keeps growing, so a read-modify-write that read it before cannot save over
        a basket created after (on Redis, a deleted key's version starts again at 1). The TTL
        removes it from the store."""

        def clear(basket: Basket) -> Basket:
            basket.items = []
            return basket

        return await self._update(buyer_id, clear, conditions, replaces=True)

    async def _update(
        self, buyer_id: str, change: Change, conditions: Preconditions, *, replaces: bool = False
    ) -> Saved:
        """`_read_modify_write`, taking turns with this buyer's other writes in this process.

        A change without conditions joins the buyer's waiting `Batch` (or opens one), so while
        one write is saved, the changes that arrive meanwhile are saved together by the next:
        contention on one basket costs one read and one save per batch, not per request. A
        change with conditions runs on its own: they name the version it replaces. So does one
        that `replaces` whatever is stored (PUT, DELETE), even a value that cannot be read."""
        key = state_key(buyer_id)
        if conditions.present or replaces:
            async with self._locks.hold(key):
                return await self._read_modify_write(buyer_id, change, conditions, replaces)
        future: asyncio.Future[Saved] = asyncio.get_running_loop().create_future()
        batch = self._batches.get(key)
        if batch is None:
            batch = self._batches[key] = Batch(lambda b: self._check_lines(len(b.items)))
            # Its own task, so a cancelled request cannot strand the others in its batch.
            task = asyncio.create_task(self._write_batch(buyer_id, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        batch.entries.append((change, future))
        return await future

    async def _write_batch(self, buyer_id: str, batch: Batch) -> None:
        key = state_key(buyer_id)
        async with self._locks.hold(key):
            del self._batches[key]  # closed: what arrives from now on waits for the next one
            try:
                saved = await self._read_modify_write(buyer_id, batch.apply, NONE)
            except NothingToSave:
                batch.settle(None)
                return
            except BaseException as exc:
                batch.settle(None, exc)
                if not isinstance(exc, Exception):
                    raise
                return
            batch.settle(saved)

    async def _read_modify_write(
        self, buyer_id: str, change: Change, conditions: Preconditions, replaces: bool = False
    ) -> Saved:
        """Read the basket, check the request's conditions on it, apply `change` (a fresh copy
        in, the new basket out), save it under the store ETag that was read. When somebody else
        saved in between (another replica), do it all again on the new basket, conditions
        included, so they always hold for the version the save replaces.

        Raises ConditionFailed (412), BasketLimitExceeded (422), whatever `change`
        raises, BasketConflict (409) when the basket kept changing for
        `basket_conflict_seconds`, StateStoreUnavailable / SidecarUnavailable (503)."""
        deadline = time.monotonic() + self._settings.basket_conflict_seconds
        attempt = 0
        refused: Basket | None = None
        while True:
            # Strong: the ETag we save against must be the newest one.
            entry = await self._sidecar.get_state(state_key(buyer_id), consistency="strong")
            try:
                current = self._basket(buyer_id, entry.value)
            except UnreadableBasket:
                if not replaces:
                    raise
                current = Basket(buyer_id=buyer_id)  # replaced, as asked: nothing to keep
            self._send_outbox(current)
            if refused is not None and refused.revision in current.revisions:
                # The "refused" save is stored after all: its reply was lost (a store that ended
                # after writing) and the sidecar's retry under the same ETag was the one refused.
                # Others may have saved after it, a checkout may have taken it out already;
                # applying the change again would apply it twice.
                return Saved(refused)
            conditions.check(current.revision if entry.value is not None else None, STALE_BASKET)
            changed = change(current)
            self._check_lines(len(changed.items))
            _new_revision(changed)
            try:
                await self._save(changed, entry.etag)
                return Saved(changed)
            except ETagMismatch:
                metrics.ETAG_CONFLICTS.inc()
                refused = changed
                if time.monotonic() > deadline:
                    raise BasketConflict(
                        "The basket kept changing while this request tried to update it; try again."
                    ) from None
            await asyncio.sleep(_backoff(attempt))
            attempt += 1
            metrics.WRITE_RETRIES.labels("update").inc()

    # -- checkout ------------------------------------------------------------------------

    async def checkout(
        self,
        buyer_id: str,
        shipping: Shipping,
        conditions: Preconditions = NONE,
        once: RequestKey | None = None,
    ) -> str:
        """`_checkout`, counted by outcome (basket_checkouts_total)."""
        try:
            request_id = await self._checkout(buyer_id, shipping, conditions, once)
        except Exception as exc:
            metrics.CHECKOUTS.labels(_checkout_outcome(exc)).inc()
            raise
        metrics.CHECKOUTS.labels("accepted").inc()
        return request_id

    async def _checkout(
        self,
        buyer_id: str,
        shipping: Shipping,
        conditions: Preconditions = NONE,
        once: RequestKey | None = None,
    ) -> str:
        """Check the basket out: one conditional save, under the store ETag of the version that
        was read, empties it and puts the priced UserCheckoutAccepted into the basket's outbox;
        then the event is published and taken out of the outbox. Returns the request id, which
        is also the event id (derived from the buyer and the revision checked out).

        The save is the moment of commitment: of all the checkouts of one version, on any
        replica, only one can save; the others read the emptied basket and get
        AlreadyCheckedOut (409) naming that one's request id. An add that lands meanwhile
        makes the save fail, and the checkout starts again with it: a line is ordered once.
        A publish that fails is retried in the background; one that a crash interrupted is
        finished by the next request that reads the basket (see `_send_outbox`).

        With `once` (an Idempotency-Key), a checkout the basket remembers with that key is this
        request's own earlier attempt: its request id is returned again, or IdempotencyKeyReused
        (422) raised when it was another request.

        Raises ConditionFailed (412), EmptyBasket (400), AlreadyCheckedOut (409),
        BasketConflict (409) when the basket kept changing for `basket_conflict_seconds`,
        StateStoreUnavailable / SidecarUnavailable (503: nothing was checked out)."""
        key = state_key(buyer_id)
        async with self._locks.hold(key):
            deadline = time.monotonic() + self._settings.basket_conflict_seconds
            attempt = 0
            committed: Basket | None = None
            registered = False
            while True:
                entry = await self._sidecar.get_state(key, consistency="strong")
                basket = self._basket(buyer_id, entry.value)
                if committed is not None and committed.revision in basket.revisions:
                    break  # the save that looked refused was stored: its reply was lost
                self._send_outbox(basket)
                earlier = _checkout_with_key(basket, once)
                if earlier is not None:
                    # This request's earlier attempt got this far, then its reply was lost.
                    return earlier
                conditions.check(basket.revision if entry.value is not None else None, STALE_BASKET)
                if not basket.items:
                    if basket.checkouts:
                        raise AlreadyCheckedOut(
                            "This basket was checked out and nothing was added since.",
                            requestId=basket.checkouts[-1].request_id,
                        )
                    raise EmptyBasket("The basket is empty; add something before checking out.")
                request_id = checkout_id(buyer_id, basket.revision)
                event = await self._checkout_event(request_id, basket, shipping)
                if not registered:  # before the save: a crash after it leaves a trace
                    await self._register_pending(buyer_id)
                    registered = True
                record = CheckoutRecord(
                    request_id=request_id,
                    idempotency_key=once.key if once else None,
                    request_fingerprint=once.fingerprint if once else None,
                )
                committed = basket.model_copy(
                    update={
                        "items": [],
                        "checkouts": [*basket.checkouts, record][-CHECKOUTS_KEPT:],
                        "outbox": [
                            *basket.outbox,
                            OutboxEntry(event=event, committed_at=time.time()),
                        ],
                    }
                )
                _new_revision(committed)
                try:
                    await self._save(committed, entry.etag)
                    break
                except ETagMismatch:
                    metrics.ETAG_CONFLICTS.inc()
                    if time.monotonic() > deadline:
                        raise BasketConflict(
                            "The basket kept changing while this checkout tried to save it; "
                            "try again."
                        ) from None
                await asyncio.sleep(_backoff(attempt))
                attempt += 1
                metrics.WRITE_RETRIES.labels("checkout").inc()
        try:
            await self._publish_checkout(committed.outbox[-1].event)
        except ServiceUnavailable:
            self._send_outbox(committed, grace=0)  # accepted all the same: retried from here
            return request_id
        try:
            await self._remove_from_outbox(buyer_id, request_id)
        except ServiceUnavailable:
            self._send_outbox(committed)  # sent again and removed from here, later
        return request_id

    # -- the basket's outbox -------------------------------------------------------------

    def _send_outbox(self, basket: Basket, *, grace: float = OUTBOX_GRACE_SECONDS) -> None:
        """Start publishing, in the background, each event in `basket`'s outbox that this
        process is not publishing yet. One younger than `grace` seconds waits for the rest of
        them first: the checkout that committed it is most likely publishing it right now.
        Each is retried until it is published or gone from the outbox (another replica sent
        it); a repeat is harmless, the event id is the same and the catalog reserves once."""
        for entry in basket.outbox:
            request_id = entry.event.request_id
            if request_id in self._sending:
                continue
            delay = max(0.0, entry.committed_at + grace - time.time())
            task = asyncio.create_task(self._deliver(basket.buyer_id, request_id, delay))
            self._sending[request_id] = task
            task.add_done_callback(functools.partial(self._sent, request_id))

    def _sent(self, request_id: str, _: asyncio.Task[None]) -> None:
        del self._sending[request_id]

    async def _deliver(self, buyer_id: str, request_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(ServiceUnavailable),
            wait=wait_exponential_jitter(multiplier=0.5, max=OUTBOX_RETRY_MAX_SECONDS),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._deliver_once(buyer_id, request_id)
        except Exception:  # e.g. a stored basket that no longer parses: keep the event there
            log.exception("Checkout %s stays in the outbox of basket %r", request_id, buyer_id)

    async def _deliver_once(self, buyer_id: str, request_id: str) -> None:
        entry = await self._sidecar.get_state(state_key(buyer_id), consistency="strong")
        pending = self._basket(buyer_id, entry.value).outbox
        event = next((e.event for e in pending if e.event.request_id == request_id), None)
        if event is None:
            return  # published and removed by another request or replica
        await self._publish_checkout(event)
        await self._remove_from_outbox(buyer_id, request_id)

    async def _publish_checkout(self, event: UserCheckoutAccepted) -> None:
        """Raises EventBusUnavailable / SidecarUnavailable (503)."""
        await self._sidecar.publish(
            CHECKOUT_TOPIC, _stored(event), event_id=event.request_id,
            event_type="UserCheckoutAccepted",
        )  # fmt: skip

    async def _remove_from_outbox(self, buyer_id: str, request_id: str) -> None:
        """Take a published event out of the outbox. Raises StateStoreUnavailable /
        SidecarUnavailable (503)."""

        def remove(basket: Basket) -> Basket | None:
            left = [e for e in basket.outbox if e.event.request_id != request_id]
            return None if len(left) == len(basket.outbox) else basket.model_copy(
                update={"outbox": left}
            )  # fmt: skip

        await self._amend(buyer_id, remove)

    async def _amend(self, buyer_id: str, change: Callable[[Basket], Basket | None]) -> None:
        """Save a change to the stored basket that a client cannot see: the basket keeps its
        revision, because its representation (RFC 9110 §8.8.3) is the same, so a client's
        If-Match still holds. `change` returns None when there is nothing (left) to do, which
        makes a retry after a lost reply harmless. Raises StateStoreUnavailable /
        SidecarUnavailable (503)."""
        key = state_key(buyer_id)
        while True:
            entry = await self._sidecar.get_state(key, consistency="strong")
            if entry.value is None:
                return
            amended = change(self._basket(buyer_id, entry.value))
            if amended is None:
                return
            try:
                await self._save(amended, entry.etag)
                return
            except ETagMismatch:
                continue  # the basket changed meanwhile: look again

    async def _register_pending(self, buyer_id: str) -> None:
        """List the buyer in its registry shard, with the time now. Raises
        StateStoreUnavailable / SidecarUnavailable (503)."""
        await self._change_pending(
            pending_key(buyer_id), lambda buyers: {**buyers, buyer_id: time.time()}
        )

    async def _change_pending(
        self, key: str, change: Callable[[dict[str, float]], dict[str, float]]
    ) -> None:
        async with self._locks.hold(key):
            while True:
                entry = await self._sidecar.get_state(key, consistency="strong")
                pending = _parsed(PendingOutboxes, key, entry.value) or PendingOutboxes()
                buyers = change(pending.buyers)
                if buyers == pending.buyers:
                    return
                try:
                    await self._sidecar.save_state(
                        key, _stored(PendingOutboxes(buyers=buyers)), etag=entry.etag,
                        consistency="strong", ttl_seconds=None,
                    )  # fmt: skip
                    return
                except ETagMismatch:
                    continue

    async def sweep_outboxes(self) -> None:
        """Follow the registry: send what the listed baskets still hold in their outboxes (at
        least OUTBOX_GRACE_SECONDS old), and unlist the buyers whose outbox is empty, unless
        they were listed again meanwhile. Every replica sweeps; a repeat is harmless. Raises
        StateStoreUnavailable / SidecarUnavailable (503)."""
        keys = [f"outbox-pending:{shard}" for shard in range(OUTBOX_SHARDS)]
        entries = await self._sidecar.get_bulk_state(keys)
        settled_before = time.time() - OUTBOX_GRACE_SECONDS
        for key in keys:
            entry = entries.get(key)
            if entry is None or entry.value is None:
                continue
            registry = _parsed(PendingOutboxes, key, entry.value)
            done: dict[str, float] = {}
            for buyer_id, since in (registry.buyers if registry else {}).items():
                if since > settled_before:
                    continue  # its checkout may still be on its way
                stored = await self._sidecar.get_state(state_key(buyer_id), consistency="strong")
                try:
                    basket = self._basket(buyer_id, stored.value)
                except UnreadableBasket:
                    basket = Basket(buyer_id=buyer_id)  # nothing in it can be sent
                if basket.outbox:
                    self._send_outbox(basket)
                else:
                    done[buyer_id] = since
            if done:
                await self._change_pending(key, functools.partial(_unlist, done))

    async def sweep_forever(self) -> None:
        """`sweep_outboxes` every `outbox_sweep_seconds`, for as long as the service runs."""
        while True:
            await asyncio.sleep(self._settings.outbox_sweep_seconds)
            try:
                await self.sweep_outboxes()
            except ServiceUnavailable as exc:
                log.warning("Outbox sweep skipped: %s", exc)
            except Exception:  # a bug must not end the sweeps for good
                log.exception("Outbox sweep failed")

    async def close(self) -> None:
        """Stop the background work (publishing, amending lines, product lookups) and wait for
        it to end; what was not sent stays in the outboxes, what was not amended is amended by
        the next read."""
        tasks = [*self._sending.values(), *self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _checkout_event(
        self, request_id: str, basket: Basket, shipping: Shipping
    ) -> UserCheckoutAccepted:
        flagged = _unavailable_lines(basket)
        priced = await self._with_current_prices(basket.model_copy(deep=True))
        if gone := [i.product_id for i in priced.items if i.unavailable]:
            self._remember_unavailable(priced, flagged)
            raise _unavailable(gone)
        lines = [
            CheckoutLine(
                product_id=i.product_id,
                product_name=i.product_name,
                unit_price=i.unit_price,
                quantity=i.quantity,
            )
            for i in priced.items
        ]
        return UserCheckoutAccepted(
            request_id=request_id,
            buyer_id=basket.buyer_id,
            items=lines,
            total=sum((line.unit_price * line.quantity for line in lines), Decimal(0)),
            shipping=shipping,
        )

    # -- checkout outcomes ---------------------------------------------------------------

    async def checkout_status(self, buyer_id: str, request_id: str) -> CheckoutStatus:
        """The outcome of one of the buyer's latest CHECKOUTS_KEPT checkouts. Raises NotFound
        (404) for any other id."""
        entry = await self._sidecar.get_state(state_key(buyer_id), consistency="eventual")
        record = _record(self._basket(buyer_id, entry.value), request_id)
        if record is None:
            raise NotFound(f"No recent checkout {request_id} of this basket.")
        return CheckoutStatus.model_validate(record.model_dump())

    async def record_reserved(self, event: StockReserved) -> None:
        """Mark the checkout reserved. A repeat, or a checkout the basket no longer remembers,
        changes nothing. Raises StateStoreUnavailable / SidecarUnavailable (503)."""

        def reserved(basket: Basket) -> Basket | None:
            record = _record(basket, event.request_id)
            if record is None or record.status != "accepted":
                return None
            record.status = "reserved"
            return basket

        # The basket's items do not change, so neither does its ETag.
        await self._amend(event.buyer_id, reserved)

    async def record_rejected(self, event: StockReservationRejected) -> None:
        """Mark the checkout rejected and put its lines back into the basket, in the same save,
        so a repeated event finds it marked and gives nothing back twice. A product the catalog
        no longer has, or one that no longer fits (quantity or line limits), is not put back;
        `returned` names those that were. Raises CatalogUnavailable / StateStoreUnavailable /
        SidecarUnavailable (503)."""
        ids = list(dict.fromkeys(line.product_id for line in event.items))
        found = await self._lookups.get(ids)
        limit = self._settings.basket_max_lines

        def give_back(basket: Basket) -> Basket:
            record = _record(basket, event.request_id)
            if record is None or record.status != "accepted":
                raise OutcomeKnown
            returned = []
            for line in event.items:
                product = found.get(line.product_id)
                if product is None:
                    continue
                held = next((i for i in basket.items if i.product_id == product["id"]), None)
                if held is not None:
                    if held.quantity + line.quantity > MAX_QUANTITY:
                        continue
                    held.quantity += line.quantity
                    _reprice(held, product)
                elif len(basket.items) < limit:
                    basket.items.append(_new_item(product, line.quantity))
                else:
                    continue
                returned.append(line.product_id)
            record.status = "rejected"
            record.shortages = list(event.shortages)
            record.returned = returned
            return basket

        with contextlib.suppress(OutcomeKnown):
            await self._update(event.buyer_id, give_back, NONE)

    # -- idempotency keys ----------------------------------------------------------------

    async def idempotent(
        self,
        buyer_id: str,
        key: str,
        fingerprint: str,
        perform: Callable[[], Awaitable[IdempotentReply]],
    ) -> IdempotentReply:
        """Run `perform` once per (buyer, Idempotency-Key), as
        draft-ietf-httpapi-idempotency-key-header §2 asks: a retry of the same request gets the
        first response again; the same key with another request (`fingerprint` differs) raises
        IdempotencyKeyReused (422); while the first is still running elsewhere, a retry waits
        for it a little, then raises IdempotencyKeyInUse (409). Only a response that `perform`
        returns is kept: after an error the key is free for another attempt."""
        record_key = idempotency_key(buyer_id, key)
        async with self._locks.hold(record_key):
            waiting_until = time.monotonic() + IN_FLIGHT_WAIT_SECONDS
            while True:
                entry = await self._sidecar.get_state(record_key, consistency="strong")
                # An unreadable record is taken as none: the claim below replaces it.
                record = _parsed(IdempotencyRecord, record_key, entry.value)
                if record is not None and record.fingerprint != fingerprint:
                    raise _key_reused()
                if record is not None and record.reply is not None:
                    return record.reply
                lease = self._settings.idempotency_lease_seconds
                if record is not None and time.time() - record.claimed_at < lease:
                    # The first request with this key is still running, on another replica.
                    if time.monotonic() > waiting_until:
                        raise IdempotencyKeyInUse(
                            "A request with this Idempotency-Key is still being processed; "
                            "retry it later."
                        )
                    await asyncio.sleep(0.05)
                    continue
                claim = IdempotencyRecord(fingerprint=fingerprint, claimed_at=time.time())
                try:
                    await self._save_record(record_key, claim, etag=entry.etag)
                    break
                except ETagMismatch:
                    continue  # another replica claimed it first
            try:
                reply = await perform()
            except BaseException:
                # Free the key for another attempt; if even that fails, the lease frees it.
                with contextlib.suppress(ServiceUnavailable):
                    await self._settle(record_key, IdempotencyRecord(fingerprint=fingerprint))
                raise
            try:
                await self._settle(
                    record_key, IdempotencyRecord(fingerprint=fingerprint, reply=reply)
                )
            except ServiceUnavailable as exc:
                # The request took effect: say so. Its key stays claimed until the lease ends;
                # a retry before that waits, then gets 409, and one after it runs again.
                log.warning("Idempotency-Key %r: the reply could not be kept: %s", key, exc)
            return reply

    async def _save_record(
        self, record_key: str, record: IdempotencyRecord, *, etag: str | None
    ) -> None:
        """Only over the version whose store ETag is `etag` (None: only if there is none)."""
        await self._sidecar.save_state(
            record_key, _stored(record), etag=etag, consistency="strong",
            ttl_seconds=self._settings.idempotency_key_seconds,
        )  # fmt: skip

    async def _settle(self, record_key: str, record: IdempotencyRecord) -> None:
        """Replace this request's claim with `record`. (A blind save would be refused: the
        claim was made with first-write, and the store keeps it so.) If another replica took
        the claim over after its lease ran out, that replica's record stands."""
        entry = await self._sidecar.get_state(record_key, consistency="strong")
        with contextlib.suppress(ETagMismatch):
            await self._save_record(record_key, record, etag=entry.etag)

    # -- prices --------------------------------------------------------------------------

    async def apply_price_change(self, event_id: str, change: ProductPriceChanged) -> bool:
        """Remember the product's new price, unless a newer one is already known. A repeated or
        late event has a price version at or below the stored one and changes nothing. Returns
        whether something was written."""
        key = price_key(change.product_id)
        async with self._locks.hold(key):
            while True:
                entry = await self._sidecar.get_state(key, consistency="strong")
                known = _parsed(ProductPrice, key, entry.value)
                if known is not None and (
                    known.deleted or known.price_version >= change.price_version
                ):
                    return False
                price = ProductPrice(
                    product_id=change.product_id,
                    price=change.price,
                    price_version=change.price_version,
                    event_id=event_id,
                )
                try:
                    # No TTL: one small entry per product whose price ever changed.
                    await self._sidecar.save_state(
                        key, _stored(price), etag=entry.etag, consistency="strong",
                        ttl_seconds=None,
                    )  # fmt: skip
                    return True
                except ETagMismatch:
                    continue  # another replica saved a price meanwhile: compare with that one

    async def apply_product_deleted(self, event_id: str, deleted: ProductDeleted) -> None:
        """Replace the product's price entry with a tombstone that lives as long as a basket
        can (the basket TTL): lines holding the product read as unavailable, and a late price
        change for it is ignored. Then the entry expires. Raises StateStoreUnavailable /
        SidecarUnavailable (503)."""
        key = price_key(deleted.product_id)
        async with self._locks.hold(key):
            while True:
                entry = await self._sidecar.get_state(key, consistency="strong")
                known = _parsed(ProductPrice, key, entry.value)
                if known is not None and known.deleted:
                    return
                tombstone = ProductPrice(
                    product_id=deleted.product_id,
                    price=known.price if known else Decimal(0),
                    price_version=known.price_version if known else 0,
                    event_id=event_id,
                    deleted=True,
                )
                try:
                    await self._sidecar.save_state(
                        key, _stored(tombstone), etag=entry.etag, consistency="strong",
                        ttl_seconds=self._settings.basket_ttl_seconds,
                    )  # fmt: skip
                    return
                except ETagMismatch:
                    continue

    def _remember_unavailable(self, read: Basket, flagged: frozenset[int]) -> None:
        """Write onto the stored lines what a read learnt from the tombstones: the product is
        gone (`flagged`: the lines stored as unavailable already). The line then stays
        unavailable after the tombstone expires, however long the basket is kept alive by later
        writes. In the background, keeping the revision (what a client sees does not change); if
        it fails, the next read tries again."""
        learnt = _unavailable_lines(read) - flagged
        if not learnt:
            return

        def flag(basket: Basket) -> Basket | None:
            lines = [i for i in basket.items if i.product_id in learnt and not i.unavailable]
            for line in lines:
                line.unavailable = True
            return basket if lines else None

        task = asyncio.create_task(self._amend(read.buyer_id, flag))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)

    async def _deleted_products(self, product_ids: list[int]) -> set[int]:
        """Which of `product_ids` the catalog deleted, as the price entries say."""
        entries = await self._sidecar.get_bulk_state([price_key(i) for i in product_ids])
        deleted = set()
        for product_id in product_ids:
            key = price_key(product_id)
            entry = entries.get(key)
            price = _parsed(ProductPrice, key, entry.value) if entry is not None else None
            if price is not None and price.deleted:
                deleted.add(product_id)
        return deleted

    async def _with_current_prices(
        self, basket: Basket, read: dict[str, StateEntry] | None = None
    ) -> Basket:
        """Show a newer catalog price than the one a line was added at, with the old one.

        The lines' price entries come from `read` (entries already fetched with the basket) and
        one bulk read of the rest: the cost depends on the basket's lines, never on how many
        baskets hold a product, because a price change writes one entry per product instead of
        touching every basket (which the state API could not even list)."""
        if not basket.items:
            return basket
        keys = [price_key(item.product_id) for item in basket.items]
        entries = dict(read or {})
        if missing := [k for k in keys if k not in entries]:
            entries.update(await self._sidecar.get_bulk_state(missing))
        for item, key in zip(basket.items, keys, strict=True):
            entry = entries.get(key)
            current = _parsed(ProductPrice, key, entry.value) if entry is not None else None
            if current is None:
                continue
            if current.deleted:
                item.unavailable = True
            elif current.price_version > item.price_version and current.price != item.unit_price:
                item.old_unit_price = item.unit_price
                item.unit_price = current.price
                item.price_version = current.price_version
        return basket

    async def _save(self, basket: Basket, etag: str | None) -> None:
        """Save over the version whose store ETag is `etag` (None: only if there is none)."""
        await self._sidecar.save_state(
            state_key(basket.buyer_id), _stored(basket), etag=etag, consistency="strong",
            ttl_seconds=self._settings.basket_ttl_seconds,
        )  # fmt: skip
        self._lines_seen[basket.buyer_id] = tuple(item.product_id for item in basket.items)

    async def _products(self, ids: list[int]) -> list[dict[str, Any]]:
        """The catalog's current data for `ids`, in order. Raises ProductNotFound (400), and
        CatalogUnavailable / SidecarUnavailable (503)."""
        found = await self._lookups.get(ids)
        missing = [i for i in ids if found[i] is None]
        if missing:
            raise ProductNotFound(
                f"productId: no product with id {', '.join(map(str, missing))} in the catalog.",
                errors=[{"field": "productId", "in": "body", "message": "unknown product"}],
            )
        return [product for i in ids if (product := found[i]) is not None]

    def _basket(self, buyer_id: str, value: Any | None) -> Basket:
        """The stored value as a Basket (older schema versions migrated), or a new one when
        nothing is stored. Raises UnreadableBasket (409) for a value of another shape, or one
        that names another buyer; replacing the basket (PUT) or emptying it (DELETE) is how a
        client gets past it."""
        if value is None:
            return Basket(buyer_id=buyer_id)
        try:
            basket = Basket.model_validate(value)
        except ValidationError as exc:
            log.warning("Basket %r does not match the stored schema: %s", buyer_id, exc)
            basket = None
        if basket is None or basket.buyer_id != buyer_id:
            if basket is not None:
                log.warning("Basket %r names buyer %r", buyer_id, basket.buyer_id)
            raise UnreadableBasket(
                "The stored basket cannot be read; replace it (PUT /api/basket) or empty it "
                "(DELETE /api/basket)."
            )
        return basket

    def _check_lines(self, count: int) -> None:
        if count > self._settings.basket_max_lines:
            raise BasketLimitExceeded(
                f"items: a basket holds at most {self._settings.basket_max_lines} lines.",
                errors=[{"field": "items", "in": "body", "message": "too many lines"}],
            )


def _new_revision(basket: Basket) -> None:
    """Give the basket about to be saved a revision of its own, and remember it."""
    basket.revision = new_revision()
    basket.revisions = [*basket.revisions, basket.revision][-REVISIONS_KEPT:]


def _unlist(done: dict[str, float], buyers: dict[str, float]) -> dict[str, float]:
    """`buyers` without those in `done`, unless listed again since (another timestamp)."""
    return {b: t for b, t in buyers.items() if done.get(b) != t}


def _key_reused() -> IdempotencyKeyReused:
    return IdempotencyKeyReused(
        "Idempotency-Key: this key was used for another request; use a new key for a new "
        "request.",
        errors=[{"field": "Idempotency-Key", "in": "header",
                 "message": "key reused with another request"}],
    )  # fmt: skip


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("A background write failed; the next read tries again: %s", exc)


def _parsed(model: type[M], key: str, value: Any) -> M | None:
    """The stored `value` as `model`; None when nothing is stored or, logged, when what is
    stored is not one (written past the service, or by an older shape): stored data is checked
    on read, and an unreadable entry is treated as absent rather than failing the request."""
    if value is None:
        return None
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        log.warning("%s: the stored value is not a %s: %s", key, model.__name__, exc)
        return None


_CHECKOUT_OUTCOMES: tuple[tuple[type[Exception], str], ...] = (
    (AlreadyCheckedOut, "already_checked_out"),
    (EmptyBasket, "empty"),
    (BasketConflict, "conflict"),
    (ProductUnavailable, "product_unavailable"),
    (ConditionFailed, "precondition_failed"),
    (ServiceUnavailable, "unavailable"),
)


def _checkout_outcome(exc: Exception) -> str:
    return next((name for kind, name in _CHECKOUT_OUTCOMES if isinstance(exc, kind)), "failed")


def _record(basket: Basket, request_id: str) -> CheckoutRecord | None:
    return next((r for r in basket.checkouts if r.request_id == request_id), None)


def _unavailable(product_ids: list[int]) -> ProductUnavailable:
    return ProductUnavailable(
        f"productId: product {', '.join(map(str, product_ids))} is no longer sold; remove it "
        "from the basket.",
        productIds=product_ids,
    )


def _checkout_with_key(basket: Basket, key: RequestKey | None) -> str | None:
    """The request id of the basket's checkout made with this Idempotency-Key, if any. Raises
    IdempotencyKeyReused (422) when that checkout was another request
    (draft-ietf-httpapi-idempotency-key-header §2.7), even after the key's own record expired."""
    if key is None:
        return None
    for record in basket.checkouts:
        if record.idempotency_key == key.key:
            if record.request_fingerprint != key.fingerprint:
                raise _key_reused()
            return record.request_id
    return None


def _checked_quantity(quantity: int) -> int:
    if quantity > MAX_QUANTITY:
        raise BasketLimitExceeded(
            f"quantity: at most {MAX_QUANTITY} of one product fit in a basket.",
            errors=[{"field": "quantity", "in": "body", "message": "quantity too large"}],
        )
    return quantity


def _unavailable_lines(basket: Basket) -> frozenset[int]:
    """The product ids of `basket`'s lines marked unavailable."""
    return frozenset(i.product_id for i in basket.items if i.unavailable)


def _line(basket: Basket, product_id: int) -> BasketItem:
    for item in basket.items:
        if item.product_id == product_id:
            return item
    raise NotFound(f"Product {product_id} is not in the basket.")


def _new_item(product: dict[str, Any], quantity: int) -> BasketItem:
    return BasketItem(
        product_id=product["id"],
        product_name=product["name"],
        unit_price=Decimal(str(product["price"])),
        quantity=quantity,
        picture_url=product.get("pictureUrl"),
        price_version=product.get("priceVersion", 0),
    )


def _reprice(item: BasketItem, product: dict[str, Any]) -> None:
    price = Decimal(str(product["price"]))
    if price != item.unit_price:
        item.old_unit_price = item.unit_price
        item.unit_price = price
    item.product_name = product["name"]
    item.price_version = product.get("priceVersion", item.price_version)
