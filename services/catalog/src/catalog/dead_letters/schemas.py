"""What the dead-letter routes return."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Self

from pydantic import Field

from catalog.dead_letters.models import DeadLetter
from catalog.schemas import CamelModel


class DeadLetterPublic(CamelModel):
    id: int = Field(description="The dead letter's id in this table (the URL's)")
    event_id: str = Field(description="The CloudEvent id (a digest when no column can hold it)")
    topic: str | None = Field(description="The topic it was published on; null: unknown")
    type: str | None = Field(description="The CloudEvent type")
    source: str | None = Field(description="The CloudEvent source: the app that published it")
    payload: Any = Field(description="The event's data; null until the letter has arrived")
    reason: str | None = Field(description="Why it was dropped, when the subscriber said so")
    deliveries: int = Field(description="How many times it reached the dead-letter topic")
    first_seen_at: datetime
    last_seen_at: datetime
    replays: int = Field(description="How many times an admin published it again")
    replayed_at: datetime | None
    replayable: bool = Field(description="Whether its topic and data are known")

    @classmethod
    def from_model(cls, letter: DeadLetter) -> Self:
        return cls(
            id=letter.id,
            event_id=letter.event_id,
            topic=letter.topic,
            type=letter.event_type,
            source=letter.source,
            payload=json.loads(letter.payload) if letter.payload is not None else None,
            reason=letter.reason,
            deliveries=letter.deliveries,
            first_seen_at=letter.first_seen_at,
            last_seen_at=letter.last_seen_at,
            replays=letter.replays,
            replayed_at=letter.replayed_at,
            replayable=letter.topic is not None and letter.payload is not None,
        )
