"""Dapr pub/sub on the receiving side: the CloudEvent envelope and the handler's answer.

A handler tells two kinds of failure apart. One that may pass later (a database or a sidecar that
is away, a row held by someone else) answers RETRY, and the sidecar delivers the event again,
for minutes (components/resiliency.yaml). One that never will (a malformed event, values the
service must refuse) raises `Undeliverable`, and the handler answers DROP: the sidecar moves the
event to the dead-letter topic at once, where the catalog records it (docs/06).
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)

DEAD_LETTER_TOPIC = "deadletter"


class EventStatus(StrEnum):
    SUCCESS = "SUCCESS"  # done (or already done: handlers are idempotent by event id)
    RETRY = "RETRY"  # could not do it now; the sidecar delivers it again
    DROP = "DROP"  # can never be done; the sidecar moves it to the dead-letter topic


class EventAck(BaseModel):
    status: EventStatus


class CloudEvent(BaseModel):
    """The envelope the sidecar delivers; `data` is what the publisher sent."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=200)
    type: str = ""
    source: str = ""
    topic: str = ""
    data: Any = None


SUCCESS = EventAck(status=EventStatus.SUCCESS)
RETRY = EventAck(status=EventStatus.RETRY)
DROP = EventAck(status=EventStatus.DROP)


class Undeliverable(Exception):
    """An event that no redelivery can help: malformed, or holding values the service refuses
    for good. `event_id` is None when the envelope has no usable id."""

    def __init__(self, reason: str, event_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.event_id = event_id


Data = TypeVar("Data", bound=BaseModel)


def describe(exc: ValidationError, limit: int = 3) -> str:
    """The first `limit` problems pydantic found, as `field: message; ...` (never the input)."""
    problems = [
        f"{'.'.join(map(str, err['loc'])) or 'the value'}: {err['msg']}"
        for err in exc.errors(include_url=False)[:limit]
    ]
    more = exc.error_count() - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")


def parse_event(payload: Any, data_model: type[Data]) -> tuple[str, Data]:
    """The event's id and its data as `data_model`. Raises Undeliverable when the envelope or
    the data is malformed, which no redelivery can fix."""
    try:
        event = CloudEvent.model_validate(payload)
    except ValidationError as exc:
        raise Undeliverable(f"not a CloudEvent: {describe(exc)}") from None
    try:
        return event.id, data_model.model_validate(event.data)
    except ValidationError as exc:
        raise Undeliverable(f"malformed {data_model.__name__}: {describe(exc)}", event.id) from None


def dropped(topic: str, exc: Undeliverable) -> EventAck:
    """DROP, logged with the reason: the sidecar moves the event to the dead-letter topic."""
    log.warning(
        "dropping %s event %s to the %s topic: %s",
        topic, exc.event_id or "(no usable id)", DEAD_LETTER_TOPIC, exc.reason,
    )  # fmt: skip
    return DROP
