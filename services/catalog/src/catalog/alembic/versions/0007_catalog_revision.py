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
    op.execute("INSERT INTO catalog_revision (id, revision) VALUES (1, 1)")
    # A row's counter, not a sequence: nextval() is not transactional, so a reader could see the
    # new number while the change it stands for is not committed yet, and cache old data under
    # it. This UPDATE commits (or rolls back) with the change.
    op.execute(
        """
        CREATE FUNCTION bump_catalog_revision() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE catalog_revision SET revision = revision + 1 WHERE id = 1;
            RETURN NULL;
        END $$
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
    for table in TABLES:
        op.execute(f"DROP TRIGGER {table}_truncate_bumps_revision ON {table}")
        op.execute(f"DROP TRIGGER {table}_bumps_revision ON {table}")
    op.execute("DROP FUNCTION bump_catalog_revision()")
    op.drop_table("catalog_revision")
