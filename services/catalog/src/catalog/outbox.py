"""The outbox relay: publishes events that committed with their change, in order, at least once,
and removes published rows and handled event ids once they are older than the retention window.

Each event is published inside the trace of the request that wrote its row (the row keeps that
request's traceparent): the publish span is a child of the request's span, the sidecar's publish
span a child of that, and the CloudEvent carries it on to the subscribers. The relay's own polling
is not traced: a span every poll would bury the traces that matter."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from opentelemetry import context, trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy.orm import Session, sessionmaker

from catalog import metrics, repository
from catalog.models import OutboxMessage
from catalog.publisher import Publisher, PublishFailed

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

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
            if not repository.take_relay_turn(session):
                return 0  # another replica's relay is publishing; the order stays its own
            for message in repository.lock_unpublished(session, BATCH):
                try:
                    self._publish(message)
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

    def _publish(self, message: OutboxMessage) -> None:
        """Publish one row's event in the trace its row was written in (a new trace when the
        row has none). Raises PublishFailed."""
        carrier = {"traceparent": message.traceparent} if message.traceparent else {}
        # Extracted into an empty context, which also lifts the polling's suppression.
        parent = TraceContextTextMapPropagator().extract(carrier, context=context.Context())
        token = context.attach(parent)
        try:
            with tracer.start_as_current_span(
                f"{message.topic} publish",
                kind=SpanKind.PRODUCER,
                attributes={
                    "messaging.system": "dapr",
                    "messaging.operation.type": "publish",
                    "messaging.destination.name": message.topic,
                    "messaging.message.id": str(message.event_id),
                    "cloudevents.event_type": message.event_type,
                },
            ) as span:
                try:
                    self._publisher.publish(
                        message.topic,
                        message.payload,
                        event_id=message.event_id,
                        event_type=message.event_type,
                    )
                except PublishFailed as exc:
                    metrics.PUBLISH_FAILURES.inc()
                    span.set_status(Status(StatusCode.ERROR, str(exc)))
                    raise
                metrics.PUBLISHED.inc()
        finally:
            context.detach(token)

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
        with suppress_instrumentation():
            self._poll_forever()

    def _poll_forever(self) -> None:
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
