"""All SQL the catalog runs. The only module that touches the database."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Select,
    create_engine,
    delete,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, joinedload, sessionmaker

from catalog.config import Settings
from catalog.errors import DatabaseUnavailable, DuplicateItemName, InvalidField
from catalog.models import (
    FK_ITEM_BRAND,
    FK_ITEM_TYPE,
    TEXT_SEARCH_CONFIG,
    UQ_ITEM_NAME,
    CatalogBrand,
    CatalogItem,
    CatalogType,
)

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
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back if it raises."""
    try:
        with factory.begin() as session:
            yield session
    except (DBAPIError, PoolTimeoutError) as exc:
        if not _database_unavailable(exc):
            raise
        log.warning("database unavailable: %s", exc.__class__.__name__, exc_info=exc)
        raise DatabaseUnavailable() from exc


def ping(engine: Engine) -> None:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (DBAPIError, PoolTimeoutError) as exc:
        raise DatabaseUnavailable() from exc


# ---- reads -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemFilter:
    brand_id: int | None = None
    type_id: int | None = None
    text: str | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if self.brand_id is not None:
            where.append(CatalogItem.catalog_brand_id == self.brand_id)
        if self.type_id is not None:
            where.append(CatalogItem.catalog_type_id == self.type_id)
        if self.text is not None:
            where.append(CatalogItem.search_vector.bool_op("@@")(_tsquery(self.text)))
        return where


def _tsquery(text_: str) -> ColumnElement[Any]:
    # websearch_to_tsquery accepts any user text ("quoted phrases", -not, or) and never raises.
    return func.websearch_to_tsquery(TEXT_SEARCH_CONFIG, text_)


def _with_brand_and_type(stmt: Select[CatalogItem]) -> Select[CatalogItem]:
    # Many-to-one, never null: one INNER JOIN in the same statement, not a query per row.
    return stmt.options(
        joinedload(CatalogItem.brand, innerjoin=True), joinedload(CatalogItem.type, innerjoin=True)
    )


def count_items_query(filter_: ItemFilter) -> Select[int]:
    return select(func.count()).select_from(CatalogItem).where(*filter_.conditions())


def page_items_query(filter_: ItemFilter, offset: int, limit: int) -> Select[CatalogItem]:
    order: list[ColumnElement[Any]] = [CatalogItem.name.asc()]
    if filter_.text is not None:
        order.insert(0, func.ts_rank(CatalogItem.search_vector, _tsquery(filter_.text)).desc())
    stmt = select(CatalogItem).where(*filter_.conditions()).order_by(*order)
    return _with_brand_and_type(stmt.offset(offset).limit(limit))


def items_by_ids_query(ids: Iterable[int]) -> Select[CatalogItem]:
    return _with_brand_and_type(select(CatalogItem).where(CatalogItem.id.in_(list(ids))))


def count_items(session: Session, filter_: ItemFilter) -> int:
    return session.execute(count_items_query(filter_)).scalar_one()


def page_items(
    session: Session, filter_: ItemFilter, offset: int, limit: int
) -> Sequence[CatalogItem]:
    return session.scalars(page_items_query(filter_, offset, limit)).all()


def get_item(session: Session, item_id: int) -> CatalogItem | None:
    stmt = items_by_ids_query([item_id]).execution_options(populate_existing=True)
    return session.scalars(stmt).one_or_none()


def get_items(session: Session, ids: Sequence[int]) -> Sequence[CatalogItem]:
    return session.scalars(items_by_ids_query(ids)).all()


def get_picture_file_name(session: Session, item_id: int) -> tuple[bool, str | None]:
    """(whether the item exists, its picture file name)."""
    row = session.execute(
        select(CatalogItem.picture_file_name).where(CatalogItem.id == item_id)
    ).one_or_none()
    return (False, None) if row is None else (True, row.picture_file_name)


def get_item_to_change(session: Session, item_id: int) -> CatalogItem | None:
    return session.get(CatalogItem, item_id)


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
    """Write a new or changed item now (so constraint violations surface here) and reload it."""
    # Read before the flush: a failed flush rolls back and expires the object.
    written = (item.name, item.catalog_brand_id, item.catalog_type_id)
    session.add(item)
    try:
        session.flush()
    except IntegrityError as exc:
        raise _translate_integrity_error(exc, *written) from exc
    reloaded = get_item(session, item.id)
    assert reloaded is not None
    return reloaded


def delete_item(session: Session, item_id: int) -> bool:
    deleted = session.execute(
        delete(CatalogItem).where(CatalogItem.id == item_id).returning(CatalogItem.id)
    )
    return deleted.first() is not None


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
