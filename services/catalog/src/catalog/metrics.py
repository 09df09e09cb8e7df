"""The catalog's own metrics, beside eshop_common's request histogram (served at /metrics)."""

from __future__ import annotations

from collections.abc import Iterator

from opentelemetry.instrumentation.utils import suppress_instrumentation
from prometheus_client import REGISTRY, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from catalog import repository

PUBLISHED = Counter(
    "catalog_outbox_published_events", "Outbox events the relay published through the sidecar."
)
PUBLISH_FAILURES = Counter(
    "catalog_outbox_publish_failures",
    "Attempts to publish an outbox event that the sidecar refused or did not answer.",
)

_BACKLOG = "catalog_outbox_unsent_events"
_BACKLOG_HELP = "Outbox events committed and not yet published."
_AGE = "catalog_outbox_oldest_unsent_age_seconds"
_AGE_HELP = "How long the oldest unpublished outbox event has waited (0 when none waits)."


class OutboxCollector(Collector):
    """The outbox backlog, read from the database when Prometheus scrapes (one indexed query
    over the unpublished rows), so it is right even while no relay runs. One per process,
    registered once; the app's lifespan points it at its database (`watch`) and away (`forget`)."""

    def __init__(self) -> None:
        self._factory: sessionmaker[Session] | None = None

    def watch(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory

    def forget(self, factory: sessionmaker[Session]) -> None:
        if self._factory is factory:
            self._factory = None

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(_BACKLOG, _BACKLOG_HELP)
        yield GaugeMetricFamily(_AGE, _AGE_HELP)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        factory = self._factory
        if factory is None:
            return
        try:
            with suppress_instrumentation(), factory() as session:
                backlog = repository.outbox_backlog(session)
        except Exception:  # the database is away: leave the series out of this scrape
            return
        yield GaugeMetricFamily(_BACKLOG, _BACKLOG_HELP, value=backlog.count)
        yield GaugeMetricFamily(_AGE, _AGE_HELP, value=backlog.oldest_age_seconds)


OUTBOX = OutboxCollector()
REGISTRY.register(OUTBOX)
