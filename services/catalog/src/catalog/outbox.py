"""The outbox relay: publishes events that committed with their change, in order, at least once."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.orm import Session, sessionmaker

from catalog import repository
from catalog.publisher import Publisher, PublishFailed

log = logging.getLogger(__name__)

BATCH = 100
MAX_BACKOFF_SECONDS = 5.0


class OutboxRelay:
    """A background thread; one per process. Several processes may run it: rows are locked
    with SKIP LOCKED, so each row is sent by one relay at a time."""

    def __init__(
        self, factory: sessionmaker[Session], publisher: Publisher, poll_seconds: float
    ) -> None:
        self._factory = factory
        self._publisher = publisher
        self._poll = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def publish_pending(self) -> int:
        """Publish what is waiting, oldest first; stop at the first failure. Returns how many."""
        published = 0
        with repository.transaction(self._factory) as session:
            for message in repository.lock_unpublished(session, BATCH):
                try:
                    self._publisher.publish(
                        message.topic,
                        message.payload,
                        event_id=message.event_id,
                        event_type=message.event_type,
                    )
                except PublishFailed as exc:
                    # Keep the order: nothing after this row goes out before it does. What was
                    # published so far is committed when the block ends.
                    log.warning("outbox: %s stays queued: %s", message.event_id, exc)
                    if published == 0:
                        raise
                    break
                repository.mark_published(session, message)
                published += 1
        return published

    def _run(self) -> None:
        backoff = self._poll
        while not self._stop.is_set():
            try:
                sent = self.publish_pending()
                backoff = self._poll
                if sent:
                    continue
            except Exception:  # the database or the sidecar is away: try again, more slowly
                log.debug("outbox relay waits", exc_info=True)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            self._stop.wait(backoff)
