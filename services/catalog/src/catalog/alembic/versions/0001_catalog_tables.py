"""catalog tables: brands, types, items with a full-text search vector

Revision ID: 0001
Revises:
Create Date: 2025-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEARCH_VECTOR_SQL = (
    "setweight(to_tsvector('english'::regconfig, name), 'A') || "
    "setweight(to_tsvector('english'::regconfig, description), 'B')"
)


def upgrade() -> None:
    op.create_table(
        "catalog_brand",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_brand")),
        sa.UniqueConstraint("name", name=op.f("uq_catalog_brand_name")),
    )
    op.create_table(
        "catalog_type",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_type")),
        sa.UniqueConstraint("name", name=op.f("uq_catalog_type_name")),
    )
    op.create_table(
        "catalog_item",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.String(1000), server_default="", nullable=False),
        sa.Column("price", sa.Numeric(10, 2), nullable=False),
        sa.Column("picture_file_name", sa.String(100), nullable=True),
        sa.Column("catalog_brand_id", sa.Integer(), nullable=False),
        sa.Column("catalog_type_id", sa.Integer(), nullable=False),
        sa.Column("available_stock", sa.Integer(), server_default="0", nullable=False),
        sa.Column("restock_threshold", sa.Integer(), server_default="0", nullable=False),
        sa.Column("max_stock_threshold", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "search_vector",
            postgresql.TSVECTOR(),
            sa.Computed(SEARCH_VECTOR_SQL, persisted=True),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_item")),
        sa.UniqueConstraint("name", name=op.f("uq_catalog_item_name")),
        sa.ForeignKeyConstraint(
            ["catalog_brand_id"],
            ["catalog_brand.id"],
            name=op.f("fk_catalog_item_catalog_brand_id_catalog_brand"),
        ),
        sa.ForeignKeyConstraint(
            ["catalog_type_id"],
            ["catalog_type.id"],
            name=op.f("fk_catalog_item_catalog_type_id_catalog_type"),
        ),
        sa.CheckConstraint("price >= 0", name=op.f("ck_catalog_item_price_not_negative")),
        sa.CheckConstraint(
            "available_stock >= 0", name=op.f("ck_catalog_item_available_stock_not_negative")
        ),
        sa.CheckConstraint(
            "restock_threshold >= 0", name=op.f("ck_catalog_item_restock_threshold_not_negative")
        ),
        sa.CheckConstraint(
            "max_stock_threshold >= 0", name=op.f("ck_catalog_item_max_stock_threshold_not_negative")
        ),
    )
    op.create_index(
        op.f("ix_catalog_item_catalog_brand_id_name"), "catalog_item", ["catalog_brand_id", "name"]
    )
    op.create_index(
        op.f("ix_catalog_item_catalog_type_id_name"), "catalog_item", ["catalog_type_id", "name"]
    )
    op.create_index(
        op.f("ix_catalog_item_search_vector"),
        "catalog_item",
        ["search_vector"],
        postgresql_using="gin",
    )


def downgrade() -> None:
    op.drop_table("catalog_item")
    op.drop_table("catalog_type")
    op.drop_table("catalog_brand")
