"""All SQL about dead letters (the catalog's repository module holds the rest)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from catalog.dead_letters.models import DeadLetter
from eshop_common.events import Undeliverable


@dataclass(frozen=True)
class Letter:
    """A dead letter as it arrived, every field already fit for its column."""

    event_id: str
    topic: str | None
    event_type: str | None
    source: str | None
    payload: str | None
    reason: str | None


@contextmanager
def refusals_are_undeliverable(event_id: str) -> Iterator[None]:
    """Turn a value the database refuses for good (out of a column's range, a NUL character, a
    constraint) into Undeliverable: it would be refused on every delivery. An outage is not a
    refusal; `repository.transaction` reports it as DatabaseUnavailable."""
    try:
        yield
    except (DataError, IntegrityError) as exc:
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise Undeliverable(f"the database refused it: {detail}", event_id) from exc


def note_reason(session: Session, event_id: str, topic: str, reason: str) -> None:
    """Say why this service dropped the event, before its letter arrives (or again, when a
    replayed letter is dropped again)."""
    session.execute(
        insert(DeadLetter)
        .values(event_id=event_id, topic=topic, reason=reason)
        .on_conflict_do_update(
            index_elements=[DeadLetter.event_id],
            set_={
                "reason": reason,
                "topic": func.coalesce(DeadLetter.topic, topic),
            },
        )
    )


def record_arrival(session: Session, letter: Letter) -> DeadLetter:
    """Insert the letter, or count one more arrival of it. What the letter says fills in what
    the row lacks; a reason noted by the handler that dropped it is kept."""
    new = insert(DeadLetter).values(
        event_id=letter.event_id,
        topic=letter.topic,
        event_type=letter.event_type,
        source=letter.source,
        payload=letter.payload,
        reason=letter.reason,
        deliveries=1,
    )
    stmt = new.on_conflict_do_update(
        index_elements=[DeadLetter.event_id],
        set_={
            "deliveries": DeadLetter.deliveries + 1,
            "last_seen_at": func.now(),
            "topic": func.coalesce(new.excluded.topic, DeadLetter.topic),
            "event_type": func.coalesce(new.excluded.event_type, DeadLetter.event_type),
            "source": func.coalesce(new.excluded.source, DeadLetter.source),
            "payload": func.coalesce(new.excluded.payload, DeadLetter.payload),
            "reason": func.coalesce(DeadLetter.reason, new.excluded.reason),
        },
    ).returning(DeadLetter)
    recorded: DeadLetter = session.scalars(
        stmt, execution_options={"populate_existing": True}
    ).one()
    return recorded


def page_dead_letters(
    session: Session, topic: str | None, event_id: str | None, offset: int, limit: int
) -> tuple[int, Sequence[DeadLetter]]:
    """(how many match, the page of them), the most recently seen first."""
    where = []
    if topic is not None:
        where.append(DeadLetter.topic == topic)
    if event_id is not None:
        where.append(DeadLetter.event_id == event_id)
    count = session.scalar(select(func.count()).select_from(DeadLetter).where(*where)) or 0
    rows = session.scalars(
        select(DeadLetter)
        .where(*where)
        .order_by(DeadLetter.last_seen_at.desc(), DeadLetter.id.desc())
        .offset(offset)
        .limit(limit)
    ).all()
    return count, rows


def get_dead_letter(session: Session, letter_id: int) -> DeadLetter | None:
    return session.get(DeadLetter, letter_id, populate_existing=True)


def mark_replayed(session: Session, letter_id: int) -> DeadLetter | None:
    replayed: DeadLetter | None = session.scalars(
        update(DeadLetter)
        .where(DeadLetter.id == letter_id)
        .values(replays=DeadLetter.replays + 1, replayed_at=func.now())
        .returning(DeadLetter),
        execution_options={"populate_existing": True},
    ).one_or_none()
    return replayed
