"""event retention: indexes for removing published outbox rows and old processed event ids

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_outbox_message_published_at",
        "outbox_message",
        ["published_at"],
        postgresql_where=sa.text("published_at IS NOT NULL"),
    )
    op.create_index("ix_processed_event_processed_at", "processed_event", ["processed_at"])


def downgrade() -> None:
    op.drop_index("ix_processed_event_processed_at", table_name="processed_event")
    op.drop_index("ix_outbox_message_published_at", table_name="outbox_message")
