"""Load shedding (eshop_common.overload): a bounded number of requests at once, a short bounded
wait, and at once a 503 /problems/overloaded with Retry-After for the rest (RFC 9110 §15.6.4,
§10.2.3); probes are never shed."""

from __future__ import annotations

import asyncio
import time

import httpx
from fastapi import FastAPI

from eshop_common.overload import LoadShedding
from eshop_common.problems import PROBLEM_JSON


def app_that_waits(release: asyncio.Event) -> FastAPI:
    app = FastAPI()

    @app.get("/slow")
    async def slow() -> dict[str, bool]:
        await release.wait()
        return {"ok": True}

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    return app


async def burst(max_in_flight: int, max_waiting: int, requests: int, release_after: float):
    release = asyncio.Event()
    app = app_that_waits(release)
    shedding = LoadShedding(
        app, max_in_flight=max_in_flight, max_waiting=max_waiting, max_wait_seconds=0.2
    )
    transport = httpx.ASGITransport(app=shedding)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

        async def timed(path: str) -> tuple[httpx.Response, float]:
            started = time.monotonic()
            resp = await client.get(path)
            return resp, time.monotonic() - started

        calls = [asyncio.create_task(timed("/slow")) for _ in range(requests)]
        await asyncio.sleep(0.05)
        probe, _ = await timed("/healthz")
        await asyncio.sleep(release_after)
        release.set()
        return await asyncio.gather(*calls), probe, shedding.shed


def test_requests_beyond_the_slots_and_the_queue_are_refused_at_once_as_overloaded():
    results, probe, shed = asyncio.run(burst(2, 1, 10, release_after=0.5))
    served = [r for r, _ in results if r.status_code == 200]
    refused = [(r, t) for r, t in results if r.status_code != 200]
    # Two ran; the one that waited gave up after 0.2 s, before a slot came free.
    assert len(served) == 2
    assert len(refused) == 8 == shed
    for resp, elapsed in refused:
        assert resp.status_code == 503
        assert resp.headers["content-type"] == PROBLEM_JSON
        assert resp.headers["retry-after"] == "1"
        assert resp.json()["type"] == "/problems/overloaded"
        assert elapsed < 0.45, "refused before the slow requests ended"
    assert probe.status_code == 200, "probes are never shed"


def test_a_request_that_waits_less_than_the_limit_is_served():
    results, _, shed = asyncio.run(burst(2, 4, 6, release_after=0.05))
    assert [r.status_code for r, _ in results] == [200] * 6
    assert shed == 0
