"""outbox traceparent: the trace an outbox row's event continues when the relay publishes it

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # W3C Trace Context §3.2: "00-" + 32 + "-" + 16 + "-" + 2 hex digits = 55 characters.
    # Rows written before this column (or without a trace) have none.
    op.add_column("outbox_message", sa.Column("traceparent", sa.String(55), nullable=True))


def downgrade() -> None:
    op.drop_column("outbox_message", "traceparent")
