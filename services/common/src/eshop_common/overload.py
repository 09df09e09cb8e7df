"""Overload is not an outage: a service takes on a bounded number of requests at once, lets a
bounded number wait briefly for a turn, and answers the rest at once with 503
`/problems/overloaded` and `Retry-After` (RFC 9110 §15.6.4, §10.2.3), instead of queueing them
for seconds until every caller times out."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from eshop_common.problems import PROBLEM_JSON, Overloaded

# Probes stay answerable under load: an orchestrator that saw them time out would restart a
# replica that is only busy.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz"})


class LoadShedding:
    """ASGI middleware. At most `max_in_flight` requests run at once; up to `max_waiting` more
    wait, each at most `max_wait_seconds`, for one of them to finish. A request beyond that, or
    one whose wait runs out, gets 503 `/problems/overloaded` with `Retry-After: 1` at once."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_in_flight: int,
        max_waiting: int,
        max_wait_seconds: float,
    ) -> None:
        self.app = app
        self._slots = asyncio.Semaphore(max_in_flight)
        self._max_waiting = max_waiting
        self._max_wait = max_wait_seconds
        self._waiting = 0
        self.shed = 0  # how many requests were refused, since start

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if not await self._take_turn():
            self.shed += 1
            await _overloaded(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._slots.release()

    async def _take_turn(self) -> bool:
        if not self._slots.locked():
            await self._slots.acquire()  # a free slot: returns at once
            return True
        if self._waiting >= self._max_waiting:
            return False
        self._waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), self._max_wait)
            return True
        except TimeoutError:
            return False
        finally:
            self._waiting -= 1


async def _overloaded(scope: Scope, receive: Receive, send: Send) -> None:
    problem = Overloaded("The service is busy; try again in a moment.")
    body: dict[str, Any] = problem.body()
    response = JSONResponse(
        body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_JSON
    )
    await response(scope, receive, send)
