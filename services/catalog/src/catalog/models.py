"""The catalog's relational model: brands, types and the items that belong to both."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Computed,
    DateTime,
    ForeignKey,
    Index,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Constraint names are part of the contract: the repository maps violations back to fields by name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

NAME_MAX = 100
DESCRIPTION_MAX = 1000
PICTURE_FILE_NAME_MAX = 100
PRICE_DIGITS, PRICE_SCALE = 10, 2
TEXT_SEARCH_CONFIG = "english"

# Name weighs more than description when ranking search results.
SEARCH_VECTOR_SQL = (
    f"setweight(to_tsvector('{TEXT_SEARCH_CONFIG}'::regconfig, name), 'A') || "
    f"setweight(to_tsvector('{TEXT_SEARCH_CONFIG}'::regconfig, description), 'B')"
)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class CatalogBrand(Base):
    __tablename__ = "catalog_brand"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX), unique=True)


class CatalogType(Base):
    __tablename__ = "catalog_type"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX), unique=True)


class CatalogItem(Base):
    __tablename__ = "catalog_item"
    __table_args__ = (
        CheckConstraint("price >= 0", name="price_not_negative"),
        CheckConstraint("available_stock >= 0", name="available_stock_not_negative"),
        CheckConstraint("restock_threshold >= 0", name="restock_threshold_not_negative"),
        CheckConstraint("max_stock_threshold >= 0", name="max_stock_threshold_not_negative"),
        # Each filter is served together with the list order (name), so a filtered page is an
        # index range scan with no sort.
        Index("ix_catalog_item_catalog_brand_id_name", "catalog_brand_id", "name"),
        Index("ix_catalog_item_catalog_type_id_name", "catalog_type_id", "name"),
        Index("ix_catalog_item_search_vector", "search_vector", postgresql_using="gin"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX), unique=True)
    description: Mapped[str] = mapped_column(String(DESCRIPTION_MAX), server_default="")
    price: Mapped[Decimal] = mapped_column(Numeric(PRICE_DIGITS, PRICE_SCALE))
    picture_file_name: Mapped[str | None] = mapped_column(String(PICTURE_FILE_NAME_MAX))
    catalog_brand_id: Mapped[int] = mapped_column(ForeignKey("catalog_brand.id"))
    catalog_type_id: Mapped[int] = mapped_column(ForeignKey("catalog_type.id"))
    available_stock: Mapped[int] = mapped_column(server_default="0")
    restock_threshold: Mapped[int] = mapped_column(server_default="0")
    max_stock_threshold: Mapped[int] = mapped_column(server_default="0")
    # Goes up by one with every price change; travels in ProductPriceChanged so that a consumer
    # can tell a newer price from an older one that arrives late.
    price_version: Mapped[int] = mapped_column(server_default="0")
    # Goes up by one with every change to the row, a stock reservation's included; the item's
    # ETag. As the mapper's version_id_col, it is in every ORM UPDATE's WHERE, so a write over a
    # version that is no longer there matches no row and raises StaleDataError.
    version: Mapped[int] = mapped_column(server_default="1")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    # Kept by PostgreSQL itself; never loaded into Python, only used in WHERE and ORDER BY.
    search_vector: Mapped[str] = mapped_column(
        TSVECTOR,
        Computed(SEARCH_VECTOR_SQL, persisted=True),
        deferred=True,
        deferred_raiseload=True,
    )

    brand: Mapped[CatalogBrand] = relationship(lazy="raise")
    type: Mapped[CatalogType] = relationship(lazy="raise")

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 (read once, by the mapper)


class CatalogRevision(Base):
    """One row: a number that goes up with every committed change to the rows the catalog's
    reads show (items, brands, types). Triggers move it, deferred to COMMIT, in the writer's own
    transaction (migration 0007), so no change, however it is made, can miss it; the read cache
    serves what it holds only while the number is the one it was read at."""

    __tablename__ = "catalog_revision"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger)


class OutboxMessage(Base):
    """An event written in the same transaction as the change it announces (transactional
    outbox); the relay publishes it through the sidecar and stamps `published_at`."""

    __tablename__ = "outbox_message"
    __table_args__ = (
        Index(
            "ix_outbox_message_unpublished",
            "id",
            postgresql_where=text("published_at IS NULL"),
        ),
        # For removing published rows once they are older than the retention window.
        Index(
            "ix_outbox_message_published_at",
            "published_at",
            postgresql_where=text("published_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    topic: Mapped[str] = mapped_column(String(100))
    event_type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The W3C traceparent of the request that wrote the row: the relay publishes the event
    # under it, so the event's trace continues the request's (None: written outside a trace).
    traceparent: Mapped[str | None] = mapped_column(String(55))


class ProcessedEvent(Base):
    """Events this service has handled, recorded in the same transaction as their effect, so a
    second delivery of the same event id changes nothing."""

    __tablename__ = "processed_event"
    __table_args__ = (Index("ix_processed_event_processed_at", "processed_at"),)

    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    topic: Mapped[str] = mapped_column(String(100))
    outcome: Mapped[str] = mapped_column(String(20))
    processed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


UQ_ITEM_NAME = "uq_catalog_item_name"
FK_ITEM_BRAND = "fk_catalog_item_catalog_brand_id_catalog_brand"
FK_ITEM_TYPE = "fk_catalog_item_catalog_type_id_catalog_type"

# The dead_letter table's model lives with the rest of the dead letters; imported here so that
# Base.metadata (Alembic, the schema test) knows every table.
import catalog.dead_letters.models  # noqa: E402, F401
