"""Dapr pub/sub on the receiving side: the CloudEvent envelope and the handler's answer."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


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
