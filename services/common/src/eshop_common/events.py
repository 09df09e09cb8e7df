"""Dapr pub/sub on the receiving side: the CloudEvent envelope and the handler's answer."""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)


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


Data = TypeVar("Data", bound=BaseModel)


def parse_event(payload: Any, data_model: type[Data]) -> tuple[str, Data] | None:
    """The event's id and its data as `data_model`; None (logged) when the envelope or the data
    is malformed, which no redelivery can fix: the handler answers DROP."""
    try:
        event = CloudEvent.model_validate(payload)
        return event.id, data_model.model_validate(event.data)
    except ValidationError as exc:
        log.warning("dropping a malformed %s event: %s", data_model.__name__, exc.errors()[:3])
        return None
