"""All SQL the catalog runs. The only module that touches the database."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Integer,
    Select,
    String,
    bindparam,
    create_engine,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, joinedload, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from catalog.config import Settings
from catalog.errors import DatabaseUnavailable, DuplicateItemName, InvalidField, StaleItem
from catalog.models import (
    FK_ITEM_BRAND,
    FK_ITEM_TYPE,
    TEXT_SEARCH_CONFIG,
    UQ_ITEM_NAME,
    CatalogBrand,
    CatalogItem,
    CatalogRevision,
    CatalogType,
    OutboxMessage,
    ProcessedEvent,
)
from eshop_common import telemetry
from eshop_common.problems import Overloaded

log = logging.getLogger(__name__)


def make_engine(settings: Settings) -> Engine:
    return create_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        # A connection that died while the database was away is replaced on checkout, so the
        # service recovers by itself when the database returns.
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": settings.db_connect_timeout,
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms}",
            "application_name": "catalog-api",
        },
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def _database_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back if it raises."""
    try:
        with factory.begin() as session:
            yield session
    except PoolTimeoutError:
        raise _pool_exhausted() from None
    except DBAPIError as exc:
        if not _database_unavailable(exc):
            raise
        log.warning("database unavailable: %s", exc.__class__.__name__, exc_info=exc)
        raise DatabaseUnavailable() from exc


def ping(engine: Engine) -> None:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except PoolTimeoutError:
        raise _pool_exhausted() from None
    except DBAPIError as exc:
        raise DatabaseUnavailable() from exc


def _pool_exhausted() -> Overloaded:
    """Every pooled connection stayed busy for `db_pool_timeout`: the database answers, the
    service has more requests than connections. Overload, not an outage."""
    return Overloaded("All database connections are busy; try again in a moment.")


# ---- reads -------------------------------------------------------------------------------------


Query = tuple[Select[Any], dict[str, Any]]


@dataclass(frozen=True)
class ItemFilter:
    brand_id: int | None = None
    type_id: int | None = None
    text: str | None = None

    @property
    def shape(self) -> tuple[bool, bool, bool]:
        return (self.brand_id is not None, self.type_id is not None, self.text is not None)

    def params(self) -> dict[str, Any]:
        params = {"brand_id": self.brand_id, "type_id": self.type_id, "text": self.text}
        return {name: value for name, value in params.items() if value is not None}


# Statements are built once per shape (which filters are present) and reused with bound
# parameters: building a select() with its eager-load options costs more CPU than running it.


def _tsquery() -> ColumnElement[Any]:
    # websearch_to_tsquery accepts any user text ("quoted phrases", -not, or) and never raises.
    return func.websearch_to_tsquery(TEXT_SEARCH_CONFIG, bindparam("text", type_=String))


def _conditions(by_brand: bool, by_type: bool, by_text: bool) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if by_brand:
        where.append(CatalogItem.catalog_brand_id == bindparam("brand_id", type_=Integer))
    if by_type:
        where.append(CatalogItem.catalog_type_id == bindparam("type_id", type_=Integer))
    if by_text:
        where.append(CatalogItem.search_vector.bool_op("@@")(_tsquery()))
    return where


def _with_brand_and_type(stmt: Select[CatalogItem]) -> Select[CatalogItem]:
    # Many-to-one, never null: one INNER JOIN in the same statement, not a query per row.
    return stmt.options(
        joinedload(CatalogItem.brand, innerjoin=True), joinedload(CatalogItem.type, innerjoin=True)
    )


@cache
def _count_statement(by_brand: bool, by_type: bool, by_text: bool) -> Select[int]:
    conditions = _conditions(by_brand, by_type, by_text)
    return select(func.count()).select_from(CatalogItem).where(*conditions)


@cache
def _page_statement(by_brand: bool, by_type: bool, by_text: bool) -> Select[CatalogItem]:
    order: list[ColumnElement[Any]] = [CatalogItem.name.asc()]
    if by_text:
        order.insert(0, func.ts_rank(CatalogItem.search_vector, _tsquery()).desc())
    stmt = (
        select(CatalogItem)
        .where(*_conditions(by_brand, by_type, by_text))
        .order_by(*order)
        .offset(bindparam("offset", type_=Integer))
        .limit(bindparam("limit", type_=Integer))
    )
    return _with_brand_and_type(stmt)


_ITEMS_BY_IDS = _with_brand_and_type(
    select(CatalogItem).where(CatalogItem.id.in_(bindparam("ids", expanding=True, type_=Integer)))
)


def count_items_query(filter_: ItemFilter) -> Query:
    return _count_statement(*filter_.shape), filter_.params()


def page_items_query(filter_: ItemFilter, offset: int, limit: int) -> Query:
    params = {**filter_.params(), "offset": offset, "limit": limit}
    return _page_statement(*filter_.shape), params


def items_by_ids_query(ids: Iterable[int]) -> Query:
    return _ITEMS_BY_IDS, {"ids": list(ids)}


def count_items(session: Session, filter_: ItemFilter) -> int:
    stmt, params = count_items_query(filter_)
    count: int = session.execute(stmt, params).scalar_one()
    return count


def page_items(
    session: Session, filter_: ItemFilter, offset: int, limit: int
) -> Sequence[CatalogItem]:
    stmt, params = page_items_query(filter_, offset, limit)
    items: Sequence[CatalogItem] = session.scalars(stmt, params).all()
    return items


def get_item(session: Session, item_id: int) -> CatalogItem | None:
    stmt, params = items_by_ids_query([item_id])
    item: CatalogItem | None = session.scalars(
        stmt, params, execution_options={"populate_existing": True}
    ).one_or_none()
    return item


def get_items(session: Session, ids: Sequence[int]) -> Sequence[CatalogItem]:
    stmt, params = items_by_ids_query(ids)
    items: Sequence[CatalogItem] = session.scalars(stmt, params).all()
    return items


def get_picture_file_name(session: Session, item_id: int) -> tuple[bool, str | None]:
    """(whether the item exists, its picture file name)."""
    row = session.execute(
        select(CatalogItem.picture_file_name).where(CatalogItem.id == item_id)
    ).one_or_none()
    return (False, None) if row is None else (True, row.picture_file_name)


def get_item_to_change(session: Session, item_id: int) -> CatalogItem | None:
    # Locked until the transaction ends: the If-Match check and the write see the same version
    # (a reservation or another admin waits), and two price changes get a price_version each.
    return session.get(CatalogItem, item_id, with_for_update=True)


_REVISION = select(CatalogRevision.revision).where(CatalogRevision.id == 1)


def make_revision_engine(settings: Settings) -> Engine:
    """The engine the read cache asks for the revision through: every statement in autocommit
    (no BEGIN and COMMIT around the one SELECT) and no pre-ping (which would double the round
    trips of a cache hit); `catalog_revision` retries once on a connection the database dropped
    instead. Its own pool, as large as the main one."""
    return create_engine(
        settings.database_url,
        isolation_level="AUTOCOMMIT",
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        connect_args={
            "connect_timeout": settings.db_connect_timeout,
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms}",
            "application_name": "catalog-api",
        },
    )


def catalog_revision(engine: Engine) -> int:
    """The catalog's revision: moved by every committed change to items, brands and types.

    One statement on its own, on `make_revision_engine`'s engine: it is the whole database cost
    of a read the cache answers. A statement sees what a transaction begun after it would see, or
    less. Raises DatabaseUnavailable and Overloaded as `transaction` does."""
    for attempt in (1, 2):
        try:
            with engine.connect() as conn:
                revision: int = conn.execute(_REVISION).scalar_one()
                return revision
        except PoolTimeoutError:
            raise _pool_exhausted() from None
        except DBAPIError as exc:
            if not _database_unavailable(exc):
                raise
            if attempt == 1 and exc.connection_invalidated:
                # A pooled connection the database dropped (it restarted): SQLAlchemy has
                # invalidated the pool's connections, so the second attempt opens a new one.
                continue
            log.warning("database unavailable: %s", exc.__class__.__name__, exc_info=exc)
            raise DatabaseUnavailable() from exc
    raise AssertionError("unreachable")


def list_brands(session: Session) -> Sequence[CatalogBrand]:
    return session.scalars(select(CatalogBrand).order_by(CatalogBrand.name)).all()


def list_types(session: Session) -> Sequence[CatalogType]:
    return session.scalars(select(CatalogType).order_by(CatalogType.name)).all()


# ---- writes ------------------------------------------------------------------------------------


def _translate_integrity_error(
    exc: IntegrityError, name: str, brand_id: int, type_id: int
) -> Exception:
    constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", None)
    if constraint == UQ_ITEM_NAME:
        return DuplicateItemName(name)
    if constraint == FK_ITEM_BRAND:
        return InvalidField("catalogBrandId", f"brand {brand_id} does not exist")
    if constraint == FK_ITEM_TYPE:
        return InvalidField("catalogTypeId", f"type {type_id} does not exist")
    return exc


def save_item(session: Session, item: CatalogItem) -> CatalogItem:
    """Write a new or changed item now (so constraint violations surface here) and reload it.

    Raises DuplicateItemName (409), InvalidField (422) for an unknown brand or type, and
    StaleItem (412) when the row is no longer at the version the item was read at."""
    # Read before the flush: a failed flush rolls back and expires the object.
    written = (item.name, item.catalog_brand_id, item.catalog_type_id)
    item_id = item.id
    session.add(item)
    try:
        session.flush()
    except IntegrityError as exc:
        raise _translate_integrity_error(exc, *written) from exc
    except StaleDataError as exc:
        # version_id_col: the UPDATE's `WHERE version = <read>` matched no row.
        raise StaleItem(item_id) from exc
    reloaded = get_item(session, item.id)
    assert reloaded is not None
    return reloaded


def delete_item(session: Session, item_id: int) -> bool:
    deleted = session.execute(
        delete(CatalogItem).where(CatalogItem.id == item_id).returning(CatalogItem.id)
    )
    return deleted.first() is not None


# ---- events: the outbox and processed event ids ----------------------------------------------


def add_outbox_message(
    session: Session, topic: str, event_type: str, payload: dict[str, Any]
) -> None:
    session.add(
        OutboxMessage(
            event_id=uuid.uuid4(), topic=topic, event_type=event_type, payload=payload,
            traceparent=telemetry.current_traceparent(),
        )
    )  # fmt: skip


# Any number the sample uses for nothing else: the key of the relays' advisory lock.
RELAY_LOCK_KEY = 0x0EB0_0C47


def take_relay_turn(session: Session) -> bool:
    """Whether this transaction may publish: one relay at a time, across every replica (a
    transaction-level advisory lock, released at commit). Without it, a relay whose publish is
    slow holds row N while another skips it and publishes N+1 first."""
    taken = session.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": RELAY_LOCK_KEY})
    return bool(taken.scalar())


def lock_unpublished(session: Session, limit: int) -> Sequence[OutboxMessage]:
    """The oldest unpublished messages, locked; another relay skips them instead of waiting."""
    return session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.published_at.is_(None))
        .order_by(OutboxMessage.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()


@dataclass(frozen=True)
class OutboxBacklog:
    count: int
    oldest_age_seconds: float


def outbox_backlog(session: Session) -> OutboxBacklog:
    """How many outbox rows wait to be published, and how long the oldest has waited."""
    count, age = session.execute(
        select(
            func.count(),
            func.coalesce(
                func.extract("epoch", func.now() - func.min(OutboxMessage.created_at)), 0
            ),
        ).where(OutboxMessage.published_at.is_(None))
    ).one()
    return OutboxBacklog(int(count), float(age))


def mark_published(session: Session, message: OutboxMessage) -> None:
    message.published_at = func.now()
    session.flush()


def remove_expired_events(
    session: Session, older_than: timedelta, batch: int = 1000
) -> tuple[int, int]:
    """Delete up to `batch` published outbox rows and up to `batch` processed event ids older
    than `older_than`; return how many of each went. Unpublished rows stay, however old. Small
    batches keep each delete's locks short: call again while either count is `batch`."""
    expired = func.now() - older_than
    published = (
        select(OutboxMessage.id)
        .where(OutboxMessage.published_at.is_not(None), OutboxMessage.published_at < expired)
        .limit(batch)
    )
    handled = (
        select(ProcessedEvent.event_id).where(ProcessedEvent.processed_at < expired).limit(batch)
    )
    outbox = session.execute(delete(OutboxMessage).where(OutboxMessage.id.in_(published)))
    events = session.execute(delete(ProcessedEvent).where(ProcessedEvent.event_id.in_(handled)))
    return outbox.rowcount, events.rowcount  # type: ignore[attr-defined]


def claim_event(session: Session, event_id: str, topic: str, outcome: str) -> bool:
    """Record the event as handled; False if it already was (a repeated delivery)."""
    claimed = session.execute(
        insert(ProcessedEvent)
        .values(event_id=event_id, topic=topic, outcome=outcome)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(ProcessedEvent.event_id)
    )
    return claimed.first() is not None


def take_stock(session: Session, product_id: int, quantity: int) -> bool:
    """Take `quantity` off the item's stock if it has that many; the CHECK guards the rest.
    The item's version moves too: an edit form read before the reservation is out of date."""
    taken = session.execute(
        update(CatalogItem)
        .where(CatalogItem.id == product_id, CatalogItem.available_stock >= quantity)
        .values(
            available_stock=CatalogItem.available_stock - quantity,
            # An UPDATE by WHERE bypasses the mapper's version counter: moved by hand.
            version=CatalogItem.version + 1,
        )
        .returning(CatalogItem.id)
    )
    return taken.first() is not None


def available_stock(session: Session, product_id: int) -> int | None:
    stock: int | None = session.scalar(
        select(CatalogItem.available_stock).where(CatalogItem.id == product_id)
    )
    return stock


# ---- seeding -----------------------------------------------------------------------------------


def ensure_named_rows(
    session: Session, model: type[CatalogBrand | CatalogType], names: list[str]
) -> dict[str, int]:
    """Insert the names that are missing; return every name's id."""
    if names:
        session.execute(
            insert(model)
            .values([{"name": n} for n in names])
            .on_conflict_do_nothing(index_elements=["name"])
        )
    rows = session.execute(select(model.id, model.name).where(model.name.in_(names)))
    return {row.name: row.id for row in rows}


def insert_missing_items(session: Session, items: list[dict[str, Any]]) -> int:
    """Insert items whose name is not taken yet; existing rows are left exactly as they are."""
    if not items:
        return 0
    inserted = session.scalars(
        insert(CatalogItem)
        .values(items)
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(CatalogItem.id)
    )
    return len(inserted.all())
