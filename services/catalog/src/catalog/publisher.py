"""Publishing through the sidecar: the catalog's only I/O besides the database.

The catalog is synchronous (its routes run in the threadpool, the outbox relay in a thread of its
own), the sidecar client every service shares (`eshop_common.sidecar.Sidecar`) is asyncio. A
publish is handed to the event loop the app runs on, captured in the lifespan, with
`asyncio.run_coroutine_threadsafe`, and the calling thread waits for it: one aiohttp session and
one pool of connections for the whole process, as in the other services. The coroutine runs in a
copy of the calling thread's context, so the OpenTelemetry aiohttp instrumentation sees the
relay's publish span and makes its client span, with the `traceparent`, under it.

Never call `publish` on the loop's own thread (from an `async def` route): it would wait for
work that the loop it blocks has to do. It raises instead.
"""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import CancelledError
from typing import Any

from eshop_common.sidecar import DaprError, Sidecar, SidecarUnavailable

# How much longer than the sidecar call's own limit a thread waits for it: the call ends by its
# own timeout first, and this only catches a loop that stopped turning.
GRACE_SECONDS = 2.0


class PublishFailed(Exception):
    pass


class Publisher:
    """Publishes to the `pubsub` component with Dapr's publish API, from any thread but the
    event loop's, through the service's one sidecar client running on that `loop`."""

    def __init__(
        self,
        sidecar: Sidecar,
        loop: asyncio.AbstractEventLoop,
        *,
        pubsub: str,
        timeout_seconds: float,
    ) -> None:
        self._sidecar = sidecar
        self._loop = loop
        self._pubsub = pubsub
        # Connecting and reading each have the sidecar call's limit.
        self._wait = 2 * timeout_seconds + GRACE_SECONDS

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
        defaults where None). Blocks until the sidecar answered. Raises PublishFailed."""
        # The CloudEvent id is the outbox row's event id: every delivery of this row, even one
        # repeated after a crash, carries the same id, which is what consumers deduplicate on.
        # A replayed dead letter keeps its id, and its type and source so it reads as it did.
        overrides = {"id": str(event_id), "type": event_type, "source": source}
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise RuntimeError("Publisher.publish blocks: call it from a thread, not the loop")
        future = asyncio.run_coroutine_threadsafe(
            self._sidecar.publish(self._pubsub, topic, data, cloudevent=overrides), self._loop
        )
        try:
            future.result(timeout=self._wait)
        except SidecarUnavailable as exc:
            raise PublishFailed(f"sidecar unreachable: {exc.detail}") from exc
        except DaprError as exc:
            raise PublishFailed(f"sidecar answered {exc}") from exc
        except TimeoutError as exc:  # the loop did not run the call (shutting down, say)
            future.cancel()
            raise PublishFailed("the publish did not finish in time") from exc
        except (CancelledError, RuntimeError) as exc:  # the loop stopped before it ran the call
            raise PublishFailed(f"the publish could not run: {exc}") from exc
