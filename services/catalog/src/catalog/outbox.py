"""The outbox relay: publishes events that committed with their change, in order, at least once,
and removes published rows and handled event ids once they are older than the retention window."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from catalog import repository
from catalog.publisher import Publisher, PublishFailed

log = logging.getLogger(__name__)

BATCH = 100
MAX_BACKOFF_SECONDS = 5.0
# How often the relay removes what is past the retention window.
RETENTION_CHECK_SECONDS = 60.0


class OutboxRelay:
    """A background thread; one per process. Several processes may run it: rows are locked
    with SKIP LOCKED, so each row is sent by one relay at a time."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        publisher: Publisher,
        poll_seconds: float,
        retention: timedelta = timedelta(days=7),
    ) -> None:
        self._factory = factory
        self._publisher = publisher
        self._poll = poll_seconds
        self._retention = retention
        self._next_cleanup = 0.0
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

    def remove_expired(self) -> int:
        """Remove published rows and handled event ids older than the retention window, in
        batches, each in its own transaction. Returns how many rows went."""
        removed = 0
        while True:
            with repository.transaction(self._factory) as session:
                counts = repository.remove_expired_events(session, self._retention, BATCH)
            removed += sum(counts)
            if max(counts) < BATCH or self._stop.is_set():
                return removed

    def _run(self) -> None:
        backoff = self._poll
        while not self._stop.is_set():
            try:
                if time.monotonic() >= self._next_cleanup:
                    self._next_cleanup = time.monotonic() + RETENTION_CHECK_SECONDS
                    if removed := self.remove_expired():
                        log.info("outbox: removed %d rows past the retention window", removed)
                sent = self.publish_pending()
                backoff = self._poll
                if sent:
                    continue
            except Exception:  # the database or the sidecar is away: try again, more slowly
                log.debug("outbox relay waits", exc_info=True)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            self._stop.wait(backoff)
