"""Publishing through the sidecar: the catalog's only I/O besides the database."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import httpx

from catalog.config import Settings


class PublishFailed(Exception):
    pass


class Publisher:
    """Publishes to the `pubsub` component with Dapr's publish API, one long-lived client."""

    def __init__(self, settings: Settings) -> None:
        headers = {}
        if settings.dapr_api_token:
            headers["dapr-api-token"] = settings.dapr_api_token.get_secret_value()
        self._pubsub = settings.pubsub_name
        self._http = httpx.Client(
            base_url=settings.dapr_url,
            headers=headers,
            timeout=httpx.Timeout(settings.dapr_timeout_seconds, connect=1.0),
            trust_env=False,
        )

    def publish(
        self,
        topic: str,
        data: Any,
        *,
        event_id: uuid.UUID | str,
        event_type: str | None,
        source: str | None = None,
    ) -> None:
        """Publish `data` as a CloudEvent with these id, type and source (the sidecar's
        defaults where None). Raises PublishFailed."""
        # The CloudEvent id is the outbox row's event id: every delivery of this row, even one
        # repeated after a crash, carries the same id, which is what consumers deduplicate on.
        # A replayed dead letter keeps its id, and its type and source so it reads as it did.
        overrides = {"id": str(event_id), "type": event_type, "source": source}
        try:
            resp = self._http.post(
                f"/v1.0/publish/{self._pubsub}/{quote(topic, safe='')}",
                json=data,
                params={f"metadata.cloudevent.{k}": v for k, v in overrides.items() if v},
            )
        except httpx.HTTPError as exc:
            raise PublishFailed(f"sidecar unreachable: {exc}") from exc
        if resp.status_code != 204:
            raise PublishFailed(f"sidecar answered {resp.status_code}: {resp.text[:200]}")

    def close(self) -> None:
        self._http.close()
