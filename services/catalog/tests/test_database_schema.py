"""The schema comes from Alembic alone, matches the models, and its constraints hold alone."""

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from psycopg import errors as pg

from catalog.db_cli import downgrade, migrate
from catalog.models import Base
from devstack.pytest_plugin import new_database

TABLES = {
    "catalog_brand",
    "catalog_type",
    "catalog_item",
    "catalog_revision",
    "outbox_message",
    "processed_event",
    "dead_letter",
}


def table_names(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrations_go_up_from_empty_down_to_base_and_up_again(postgres_server):
    url = new_database(postgres_server, "migrations")
    assert table_names(url) == set()
    migrate(url)
    assert table_names(url) == TABLES | {"alembic_version"}
    downgrade(url, "base")
    assert table_names(url) == {"alembic_version"}
    migrate(url)
    assert table_names(url) >= TABLES


def test_migrated_schema_matches_the_models(postgres_server):
    url = new_database(postgres_server, "drift")
    migrate(url)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_the_search_and_filter_indexes_exist(db):
    indexes = {ix["name"]: ix for ix in sa.inspect(db).get_indexes("catalog_item")}
    assert indexes["ix_catalog_item_search_vector"]["dialect_options"]["postgresql_using"] == "gin"
    assert indexes["ix_catalog_item_catalog_brand_id_name"]["column_names"][0] == "catalog_brand_id"
    assert indexes["ix_catalog_item_catalog_type_id_name"]["column_names"][0] == "catalog_type_id"


def test_the_list_query_uses_the_brand_index(db):
    with db.connect() as conn:
        conn.execute(sa.text("SET enable_seqscan = off"))
        plan = (
            conn.execute(
                sa.text(
                    "EXPLAIN SELECT id FROM catalog_item WHERE catalog_brand_id = 1 "
                    "ORDER BY name LIMIT 10"
                )
            )
            .scalars()
            .all()
        )
    assert any("ix_catalog_item_catalog_brand_id_name" in line for line in plan), plan


INSERT = sa.text(
    "INSERT INTO catalog_item (name, price, catalog_brand_id, catalog_type_id, available_stock) "
    "VALUES (:name, :price, 1, 1, :stock)"
)


def raw_insert(db, new_name, price, stock):
    with db.begin() as conn:
        conn.execute(INSERT, {"name": new_name(), "price": price, "stock": stock})


def test_raw_sql_with_a_negative_price_is_refused_by_the_check(db, new_name):
    with pytest.raises(sa.exc.IntegrityError) as caught:
        raw_insert(db, new_name, price=-1, stock=0)
    assert isinstance(caught.value.orig, pg.CheckViolation)
    assert caught.value.orig.diag.constraint_name == "ck_catalog_item_price_not_negative"


def test_raw_sql_with_negative_stock_is_refused_by_the_check(db, new_name):
    with pytest.raises(sa.exc.IntegrityError) as caught:
        raw_insert(db, new_name, price=1, stock=-1)
    assert caught.value.orig.diag.constraint_name == "ck_catalog_item_available_stock_not_negative"


def test_raw_sql_with_zero_price_and_stock_is_accepted(db, new_name):
    """The control: the same insert at the boundary succeeds, so the refusals are the CHECKs."""
    raw_insert(db, new_name, price=0, stock=0)


def test_raw_sql_with_a_duplicate_name_is_refused_by_the_unique_constraint(db, new_name):
    name = new_name()
    with db.begin() as conn:
        conn.execute(INSERT, {"name": name, "price": 1, "stock": 1})
    with pytest.raises(sa.exc.IntegrityError) as caught, db.begin() as conn:
        conn.execute(INSERT, {"name": name, "price": 1, "stock": 1})
    assert caught.value.orig.diag.constraint_name == "uq_catalog_item_name"


def test_raw_sql_with_an_unknown_brand_is_refused_by_the_foreign_key(db, new_name):
    with pytest.raises(sa.exc.IntegrityError) as caught, db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO catalog_item (name, price, catalog_brand_id, catalog_type_id) "
                "VALUES (:name, 1, 999999, 1)"
            ),
            {"name": new_name()},
        )
    assert (
        caught.value.orig.diag.constraint_name == "fk_catalog_item_catalog_brand_id_catalog_brand"
    )


def test_a_price_with_more_than_two_decimals_is_rounded_by_numeric_10_2(db, new_name):
    name = new_name()
    with db.begin() as conn:
        conn.execute(INSERT, {"name": name, "price": "1.005", "stock": 0})
        stored = conn.execute(
            sa.text("SELECT price FROM catalog_item WHERE name = :n"), {"n": name}
        ).scalar_one()
    assert str(stored) == "1.01"


def test_the_database_constraint_names_are_the_models_names(db):
    inspector = sa.inspect(db)
    in_database = {ck["name"] for ck in inspector.get_check_constraints("catalog_item")}
    in_database |= {fk["name"] for fk in inspector.get_foreign_keys("catalog_item")}
    in_database |= {uq["name"] for uq in inspector.get_unique_constraints("catalog_item")}
    table = Base.metadata.tables["catalog_item"]
    in_models = {c.name for c in table.constraints if not isinstance(c, sa.PrimaryKeyConstraint)}
    assert in_database == in_models
