"""The rules for dead letters: read one as the sidecar delivers it, record it, publish it again."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from catalog import repository
from catalog.dead_letters import repository as letters
from catalog.dead_letters.models import EVENT_ID_MAX, NAME_MAX, REASON_MAX, TOPIC_MAX, DeadLetter
from catalog.errors import DatabaseUnavailable
from catalog.publisher import Publisher, PublishFailed
from eshop_common import events
from eshop_common.events import EventAck, Undeliverable
from eshop_common.problems import Conflict, NotFound, ServiceUnavailable

log = logging.getLogger(__name__)

NO_REASON = "no reason recorded: a subscriber that keeps none dropped it, or its retries ran out"


class DeadLetterNotFound(NotFound):
    def __init__(self, letter_id: int) -> None:
        super().__init__(f"Dead letter {letter_id} does not exist.", deadLetterId=letter_id)


class NotReplayable(Conflict):
    type = "/problems/dead-letter-not-replayable"


class EventBusUnavailable(ServiceUnavailable):
    type = "/problems/pubsub-unavailable"


def letter_key(event_id: str) -> str:
    """The CloudEvent id as the table keeps it: itself, unless a column cannot hold it (too
    long, a NUL character, not Unicode), then a digest of it, the same on every arrival."""
    if 0 < len(event_id) <= EVENT_ID_MAX and _fit(event_id, EVENT_ID_MAX) == event_id:
        return event_id
    return "sha256:" + hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()


def dropped(factory: sessionmaker[Session], topic: str, exc: Undeliverable) -> EventAck:
    """DROP, for a catalog handler: the reason goes into the dead_letter table first, so that
    the letter shows it when it arrives. If the database cannot take it now, the event is
    dropped all the same, without a reason."""
    if exc.event_id is not None:
        try:
            with repository.transaction(factory) as session:
                letters.note_reason(
                    session, letter_key(exc.event_id), topic, _fit(exc.reason, REASON_MAX) or ""
                )
        except (DatabaseUnavailable, SQLAlchemyError):
            log.warning("the reason for dropping %s was not recorded", exc.event_id, exc_info=True)
    return events.dropped(topic, exc)


def read_letter(delivered: Any) -> letters.Letter:
    """The dead letter in what the sidecar delivered. The `deadletter` subscription has
    `rawPayload`, so the message arrives as it was on the topic, base64 in `data_base64`, even
    one that is no CloudEvent at all; without it, the sidecar delivers the CloudEvent itself."""
    raw = _message_bytes(delivered)
    try:
        envelope = json.loads(raw, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError):
        envelope = None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("id"), str):
        return letters.Letter(
            event_id="sha256:" + hashlib.sha256(raw).hexdigest(),
            topic=None,
            event_type=None,
            source=None,
            payload=_json_text(raw.decode("utf-8", errors="replace")),
            reason="not a CloudEvent: the message has no event id",
        )
    data = envelope["data"] if "data" in envelope else envelope.get("data_base64")
    return letters.Letter(
        event_id=letter_key(envelope["id"]),
        topic=_fit(envelope.get("topic"), TOPIC_MAX),
        event_type=_fit(envelope.get("type"), NAME_MAX),
        source=_fit(envelope.get("source"), NAME_MAX),
        payload=_json_text(data),
        reason=None,
    )


def record(factory: sessionmaker[Session], delivered: Any) -> DeadLetter | None:
    """Record a dead letter, or one more arrival of it, and log it with its reason. Returns
    None, logged as an error, in the one case the database refuses even the fitted letter.
    Raises DatabaseUnavailable (503)."""
    letter = read_letter(delivered)
    try:
        with (
            letters.refusals_are_undeliverable(letter.event_id),
            repository.transaction(factory) as session,
        ):
            recorded = letters.record_arrival(session, letter)
    except Undeliverable as exc:
        log.error("dead letter %r could not be recorded: %s", letter, exc.reason)
        return None
    log.warning(
        "dead letter %s from topic %s, arrival %d: %s",
        recorded.event_id, recorded.topic or "(unknown)", recorded.deliveries,
        recorded.reason or NO_REASON,
    )  # fmt: skip
    return recorded


def list_letters(
    session: Session, topic: str | None, event_id: str | None, page_index: int, page_size: int
) -> tuple[int, list[DeadLetter]]:
    count, rows = letters.page_dead_letters(
        session, topic, event_id, page_index * page_size, page_size
    )
    return count, list(rows)


def get_letter(session: Session, letter_id: int) -> DeadLetter:
    """Raises DeadLetterNotFound (404)."""
    letter = letters.get_dead_letter(session, letter_id)
    if letter is None:
        raise DeadLetterNotFound(letter_id)
    return letter


def replay(
    factory: sessionmaker[Session], publisher: Publisher, letter_id: int, retention: timedelta
) -> DeadLetter:
    """Publish the letter's event again: to its topic, with its CloudEvent id, type and
    source, so that its subscriber handles it once whatever it did before (handlers are
    idempotent by event id). Then count the replay.

    Raises DeadLetterNotFound (404); NotReplayable (409) when the topic or the data is not
    known, or when the letter is older than the event retention window (its id may be
    forgotten, and the event handled twice); EventBusUnavailable or DatabaseUnavailable (503).
    """
    with repository.transaction(factory) as session:
        letter = get_letter(session, letter_id)
    if letter.topic is None or letter.payload is None:
        raise NotReplayable(
            "This dead letter cannot be published again: its topic or its data is not known.",
            deadLetterId=letter_id,
        )
    if datetime.now(UTC) - letter.first_seen_at > retention:
        raise NotReplayable(
            f"This dead letter is older than the {retention.days}-day event retention window; "
            "its subscribers may have forgotten its id and would handle it twice.",
            deadLetterId=letter_id,
        )
    try:
        publisher.publish(
            letter.topic, json.loads(letter.payload), event_id=letter.event_id,
            event_type=letter.event_type, source=letter.source,
        )  # fmt: skip
    except PublishFailed as exc:
        raise EventBusUnavailable(
            f"The event could not be published again: {exc}", deadLetterId=letter_id
        ) from exc
    with repository.transaction(factory) as session:
        replayed = letters.mark_replayed(session, letter_id)
    if replayed is None:  # removed meanwhile; the event went out all the same
        raise DeadLetterNotFound(letter_id)
    log.info("dead letter %s published again to %s", replayed.event_id, replayed.topic)
    return replayed


def _message_bytes(delivered: Any) -> bytes:
    if isinstance(delivered, dict) and isinstance(delivered.get("data_base64"), str):
        try:
            return base64.b64decode(delivered["data_base64"], validate=True)
        except (binascii.Error, ValueError):
            pass
    return json.dumps(delivered).encode()


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _fit(value: Any, limit: int) -> str | None:
    """`value` as text a column can hold: no NUL, valid Unicode, at most `limit` characters."""
    if not isinstance(value, str):
        return None
    text = value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return text[:limit]


def _json_text(value: Any) -> str:
    # json.dumps escapes NUL and other control characters; lone surrogates need ASCII escapes.
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value)
    return text
