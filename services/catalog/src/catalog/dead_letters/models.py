"""The dead_letter table."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from catalog.models import Base

EVENT_ID_MAX = 200
TOPIC_MAX = 100
NAME_MAX = 200
REASON_MAX = 1000


class DeadLetter(Base):
    """One event, by its CloudEvent id, however often it reached the dead-letter topic.

    A row may exist before its letter arrives: a catalog handler that drops an event notes why
    first (`reason`, `deliveries` 0); the sidecar's copy then fills in the rest."""

    __tablename__ = "dead_letter"
    __table_args__ = (Index("ix_dead_letter_last_seen_at", "last_seen_at"),)

    # The URL's id: a CloudEvent id may be any text, which a path segment cannot always carry.
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(EVENT_ID_MAX), unique=True)
    # Where it was published, and by whom: what a replay publishes it as again. None: unknown
    # (the letter was no CloudEvent, or it has not arrived yet).
    topic: Mapped[str | None] = mapped_column(String(TOPIC_MAX))
    event_type: Mapped[str | None] = mapped_column(String(NAME_MAX))
    source: Mapped[str | None] = mapped_column(String(NAME_MAX))
    # The event's data as JSON text, not JSONB: a poison event is often one that PostgreSQL's
    # JSON refuses (a NUL character, a lone surrogate), and it must still be kept.
    payload: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(String(REASON_MAX))
    deliveries: Mapped[int] = mapped_column(server_default="0")
    first_seen_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    last_seen_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    replays: Mapped[int] = mapped_column(server_default="0")
    replayed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
