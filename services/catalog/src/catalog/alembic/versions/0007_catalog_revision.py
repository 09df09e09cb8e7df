"""catalog revision: one number that every change to what the catalog's reads show moves

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The tables whose rows the public reads show: items (stock reservations included, which are
# UPDATEs of catalog_item), and the brands and types that lists and items name.
TABLES = ("catalog_item", "catalog_brand", "catalog_type")


def upgrade() -> None:
    op.create_table(
        "catalog_revision",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_catalog_revision_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_revision")),
    )
    # A row's counter, not a sequence: nextval() is not transactional, so a reader could see the
    # new number while the change it stands for is not committed yet, and cache old data under
    # it. This UPDATE commits (or rolls back) with the change.
    #
    # It counts in microseconds of the database's clock, never below the last value plus one: a
    # database created again, or restored from a backup and then changed, moves on past every
    # number its earlier life reached, so a process still holding entries (or a client holding
    # ETags) from that life can never take them for current.
    op.execute(
        """
        CREATE FUNCTION catalog_clock() RETURNS bigint LANGUAGE sql VOLATILE AS $$
            SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
        $$
        """
    )
    op.execute("INSERT INTO catalog_revision (id, revision) VALUES (1, catalog_clock())")
    op.execute(
        """
        CREATE FUNCTION bump_catalog_revision() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE catalog_revision SET revision = greatest(revision + 1, catalog_clock())
            WHERE id = 1;
            RETURN NULL;
        END $$
        """
    )
    # An item's version is its ETag (If-Match on writes, If-None-Match on reads), so it must move
    # whenever the item's representation does. The ORM moves it on its own writes, and the
    # reservation code by hand; these move it for every other writer: an UPDATE that leaves it
    # alone (raw SQL), and a rename of the brand or type the item shows.
    op.execute(
        """
        CREATE FUNCTION move_item_version() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.version = OLD.version THEN
                NEW.version := OLD.version + 1;
            END IF;
            RETURN NEW;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER catalog_item_moves_version BEFORE UPDATE ON catalog_item
        FOR EACH ROW EXECUTE FUNCTION move_item_version()
        """
    )
    for table, column in (("catalog_brand", "catalog_brand_id"), ("catalog_type", "catalog_type_id")):
        op.execute(
            f"""
            CREATE FUNCTION {table}_moves_item_versions() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                UPDATE catalog_item SET version = version + 1 WHERE {column} = NEW.id;
                RETURN NULL;
            END $$
            """
        )
        op.execute(
            f"""
            CREATE TRIGGER {table}_moves_item_versions AFTER UPDATE ON {table}
            FOR EACH ROW WHEN (OLD IS DISTINCT FROM NEW)
            EXECUTE FUNCTION {table}_moves_item_versions()
            """
        )
    for table in TABLES:
        # Deferred to COMMIT: a writer takes the revision row's lock last, after every row it
        # changes, and holds it only while it commits. An immediate trigger would take it at the
        # first changed row and hold it to the end, so two reservations each waiting for a row
        # the other has locked would also wait for each other on the revision: a deadlock.
        op.execute(
            f"""
            CREATE CONSTRAINT TRIGGER {table}_bumps_revision
            AFTER INSERT OR UPDATE OR DELETE ON {table}
            DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION bump_catalog_revision()
            """
        )
        # TRUNCATE has no rows to fire for (and no constraint trigger): a statement trigger.
        op.execute(
            f"""
            CREATE TRIGGER {table}_truncate_bumps_revision AFTER TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_revision()
            """
        )


def downgrade() -> None:
    for table in ("catalog_brand", "catalog_type"):
        op.execute(f"DROP TRIGGER {table}_moves_item_versions ON {table}")
        op.execute(f"DROP FUNCTION {table}_moves_item_versions()")
    op.execute("DROP TRIGGER catalog_item_moves_version ON catalog_item")
    op.execute("DROP FUNCTION move_item_version()")
    for table in TABLES:
        op.execute(f"DROP TRIGGER {table}_truncate_bumps_revision ON {table}")
        op.execute(f"DROP TRIGGER {table}_bumps_revision ON {table}")
    op.execute("DROP FUNCTION bump_catalog_revision()")
    op.execute("DROP FUNCTION catalog_clock()")
    op.drop_table("catalog_revision")
