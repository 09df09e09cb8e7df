"""Where a basket request's CPU goes, part by part, next to the floors it cannot go below.

One run starts its own stack from dapr.yaml (free ports, private Redis and PostgreSQL, tracing
off everywhere), then measures CPU time per request (`time.process_time`, one request at a
time, so a request's CPU is the process's CPU while it runs):

  in process   the basket's FastAPI app imported here and called as an ASGI app, on the stack's
               basket sidecar: no HTTP server, so its parts can be timed by wrapping functions;
  baselines    in the same process: an empty `async def` route of a bare FastAPI app, the same
               with a dependency that declares two headers (as the basket's conditions do), the
               basket app's own `/healthz` (its middleware, no route work), and one state GET
               through the sidecar client alone (`eshop_common.sidecar.Sidecar`);
  over HTTP    the stack's basket process (uvicorn) for the same requests, its CPU read from
               /proc: what the HTTP server adds to the in-process figure.

Parts of a GET /api/basket and a POST /api/basket/items: FastAPI's dependency solving (the
body, headers, token, buyer id, conditions; `fastapi.routing.solve_dependencies`), the sidecar
calls (`Sidecar.request`: aiohttp, the request out and the answer in), and the rest (routing,
middleware, the basket's own code, the response). The figures are medians over `--rounds`
rounds of `--requests` requests each; only figures from the same run compare.

    uv run python scripts/profile_basket.py                   # 6-8 minutes on 2 cores
    uv run python scripts/profile_basket.py --requests 200    # a quick look
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import uvloop
from fastapi import Depends, FastAPI, Header

from devstack.procs import proc_stats
from devstack.stack import DEMO_DAPR_API_TOKEN, DEMO_JWT_SECRET, Stack, install_daprd
from eshop_common.auth import mint_token

TICK = os.sysconf("SC_CLK_TCK")
BUYERS = 512  # POSTs go round-robin over them; GETs read the first, which holds three lines
PRODUCTS = 8

Asgi = Callable[..., Awaitable[None]]


class Parts:
    """CPU time spent inside wrapped functions, outermost calls only (they nest: a dependency's
    own dependencies are solved by a nested call)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._depth: dict[str, int] = {}

    def wrap(self, owner: Any, attribute: str, part: str) -> None:
        original = getattr(owner, attribute)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            outermost = self._depth.get(part, 0) == 0
            self._depth[part] = self._depth.get(part, 0) + 1
            start = time.process_time()
            try:
                return await original(*args, **kwargs)
            finally:
                self._depth[part] -= 1
                if outermost:
                    self.seconds[part] = self.seconds.get(part, 0.0) + time.process_time() - start
                    self.calls[part] = self.calls.get(part, 0) + 1

        setattr(owner, attribute, timed)

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def bare_app() -> FastAPI:
    """The framework's floor: routes that do nothing, with and without declared headers."""
    app = FastAPI()

    async def two_headers(
        if_match: Annotated[str | None, Header(alias="If-Match")] = None,
        if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
    ) -> None:
        return None

    @app.get("/empty")
    async def empty() -> None:
        return None

    @app.get("/headers", dependencies=[Depends(two_headers)])
    async def headers() -> None:
        return None

    return app


def asgi_request(
    app: Asgi, method: str, path: str, headers: dict[str, str], body: bytes = b"",
    state: dict[str, Any] | None = None,
) -> Callable[[], Awaitable[int]]:  # fmt: skip
    """A function that sends one request to `app` in process and returns its status."""
    raw_headers = [(b"host", b"profile")] + [
        (k.lower().encode(), v.encode()) for k, v in headers.items()
    ]
    if body:
        raw_headers += [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())]  # fmt: skip
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": raw_headers, "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send_one() -> int:
        status = 0

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app({**scope, "state": dict(state or {})}, receive, send)
        return status

    return send_one


# One round of a probe: CPU µs per request, and each part's µs and calls per request.
Figure = tuple[float, dict[str, float], dict[str, float]]
Probe = Callable[[int], Awaitable[Figure]]  # runs n requests


def in_process(
    send: Callable[[], Awaitable[Any]], parts: Parts | None = None,
    ok: Callable[[Any], bool] = lambda status: status == 200,
) -> Probe:  # fmt: skip
    """A probe timing this process's CPU over `send()` calls. Raises RuntimeError when a
    request fails."""

    async def probe(requests: int) -> Figure:
        if parts is not None:
            parts.reset()
        start = time.process_time()
        for _ in range(requests):
            status = await send()
            if not ok(status):
                raise RuntimeError(f"a request failed: {status}")
        total = (time.process_time() - start) / requests * 1e6
        if parts is None:
            return total, {}, {}
        seconds = {k: v / requests * 1e6 for k, v in parts.seconds.items()}
        return total, seconds, {k: n / requests for k, n in parts.calls.items()}

    return probe


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the processes of process group `pgid`."""
    return sum(ticks for _, _, group, ticks in proc_stats() if group == pgid) / TICK


def over_http(
    pgid: int, session: aiohttp.ClientSession, method: str, url: str,
    nth: Callable[[int], tuple[dict[str, str], dict[str, Any] | None]],
) -> Probe:  # fmt: skip
    """A probe timing process group `pgid`'s CPU while it answers requests sent one at a time
    over HTTP; `nth(n)` gives the n-th request's headers and JSON body."""
    sent = 0

    async def probe(requests: int) -> Figure:
        nonlocal sent
        before = group_cpu_seconds(pgid)
        for _ in range(requests):
            headers, body = nth(sent)
            sent += 1
            async with session.request(method, url, json=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{method} {url}: HTTP {resp.status}")
        return (group_cpu_seconds(pgid) - before) / requests * 1e6, {}, {}

    return probe


async def measure(probes: dict[str, Probe], requests: int, rounds: int) -> dict[str, Figure]:
    """Each probe's median round. The probes take turns round by round, so a machine that
    speeds up or slows down during the run weighs on all of them alike."""
    for probe in probes.values():
        await probe(min(requests, 100))  # warm-up: caches, connections
    results: dict[str, list[Figure]] = {name: [] for name in probes}
    for _ in range(rounds):
        for name, probe in probes.items():
            results[name].append(await probe(requests))
            print(f"  {name}: {results[name][-1][0]:,.0f} µs", flush=True)
    return {name: sorted(r, key=lambda f: f[0])[len(r) // 2] for name, r in results.items()}


def row(name: str, figure: Figure) -> list[str]:
    total, of, calls = figure
    dependencies, sidecar = of.get("FastAPI dependency solving"), of.get("sidecar calls")
    return [
        name, f"{total:,.0f}",
        f"{dependencies:,.0f}" if dependencies is not None else "",
        f"{sidecar:,.0f} ({calls['sidecar calls']:.1f} calls)" if sidecar is not None else "",
        f"{total - sum(of.values()):,.0f}" if of else "",
    ]  # fmt: skip


async def profile(stack: Stack, args: argparse.Namespace) -> list[list[str]]:
    # The app reads its settings at import: point it at the stack's basket sidecar, tracing off.
    os.environ.update(
        DAPR_HTTP_PORT=stack.dapr_url("basket-api").rsplit(":", 1)[1],
        DAPR_API_TOKEN=DEMO_DAPR_API_TOKEN, JWT_SECRET=DEMO_JWT_SECRET,
        OTEL_SDK_DISABLED="true", LOG_LEVEL="warning",
    )  # fmt: skip
    import fastapi.routing

    from basket.main import app
    from eshop_common.sidecar import Sidecar

    parts = Parts()
    parts.wrap(fastapi.routing, "solve_dependencies", "FastAPI dependency solving")
    parts.wrap(Sidecar, "request", "sidecar calls")

    tag = uuid.uuid4().hex[:8]
    buyers = [f"profile-{tag}-{n}" for n in range(BUYERS)]
    auth = {b: {"Authorization": f"Bearer {mint_token(DEMO_JWT_SECRET, b)}"} for b in buyers}
    basket_url = stack.url("basket-api")
    client = Sidecar(stack.dapr_url("basket-api"), owner="profile", api_token=DEMO_DAPR_API_TOKEN)
    floor = bare_app()

    async with aiohttp.ClientSession() as session, client:
        async with session.get(
            f"{stack.url('catalog-api')}/api/catalog/items", params={"pageSize": PRODUCTS}
        ) as resp:  # fmt: skip
            products = [item["id"] for item in (await resp.json())["items"]]
        for line, product in enumerate(products[:3]):
            async with session.post(
                f"{basket_url}/api/basket/items", headers=auth[buyers[0]],
                json={"productId": product, "quantity": line + 1},
            ) as resp:  # fmt: skip
                if resp.status != 200:
                    raise RuntimeError(f"filling the basket: HTTP {resp.status}")

        def add(n: int) -> tuple[dict[str, str], dict[str, Any]]:
            """The n-th add: round-robin over the buyers but the first (whose basket the GETs
            read), so no line nears MAX_QUANTITY."""
            buyer = buyers[1 + n % (BUYERS - 1)]
            return auth[buyer], {"productId": products[n % PRODUCTS], "quantity": 1}

        async with app.router.lifespan_context(app) as state:
            adds = itertools.count()

            @functools.cache
            def nth_post(n: int) -> Callable[[], Awaitable[int]]:
                headers, body = add(n)
                body_bytes = json.dumps(body).encode()
                return asgi_request(app, "POST", "/api/basket/items", headers, body_bytes, state)

            async def post() -> int:
                return await nth_post(next(adds) % ((BUYERS - 1) * PRODUCTS))()

            pgid = stack.procs["basket-api"].popen.pid  # the app's own process group
            probes = {
                "bare FastAPI: empty async route":
                    in_process(asgi_request(floor, "GET", "/empty", {})),
                "bare FastAPI: + a dependency declaring two headers":
                    in_process(asgi_request(floor, "GET", "/headers", {})),
                "sidecar client alone: one state GET": in_process(
                    lambda: client.get_state("statestore", buyers[0]), parts,
                    ok=lambda entry: entry.value is not None,
                ),
                "basket app: GET /healthz (middleware only)":
                    in_process(asgi_request(app, "GET", "/healthz", {}, state=state)),
                "basket app: GET /api/basket (three lines)": in_process(
                    asgi_request(app, "GET", "/api/basket", auth[buyers[0]], state=state), parts
                ),
                "basket app: POST /api/basket/items": in_process(post, parts),
                "basket process over HTTP (uvicorn): /healthz": over_http(
                    pgid, session, "GET", f"{basket_url}/healthz", lambda n: ({}, None)
                ),
                "basket process over HTTP (uvicorn): GET /api/basket": over_http(
                    pgid, session, "GET", f"{basket_url}/api/basket",
                    lambda n: (auth[buyers[0]], None),
                ),
                "basket process over HTTP (uvicorn): POST /api/basket/items": over_http(
                    pgid, session, "POST", f"{basket_url}/api/basket/items", add
                ),
            }  # fmt: skip
            figures = await measure(probes, args.requests, args.rounds)
    return [row(name, figure) for name, figure in figures.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="profile_basket", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per figure (median kept)")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="eshop-profile-basket-"))
    base.chmod(0o755)  # PostgreSQL runs as `postgres` and must reach its data directory
    stack = Stack(
        state_dir=base / "stack", daprd=install_daprd(), free_ports=True, durable=False,
        sampling_rate="0", env={"OTEL_SDK_DISABLED": "true"},
    )  # fmt: skip
    try:
        print(f"starting the stack under {base} ...", flush=True)
        stack.start()
        rows = uvloop.run(profile(stack, args))
    finally:
        stack.stop()
        shutil.rmtree(base, ignore_errors=True)
    header = ["request", "CPU µs per request", "of which FastAPI dependency solving",
              "of which sidecar calls", "rest"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|---" + "|--:" * (len(header) - 1) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    print(
        f"\nuv run python scripts/profile_basket.py {' '.join(argv or sys.argv[1:])}".rstrip()
        + f"\n\n{args.rounds} rounds of {args.requests} requests, one at a time; medians. "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"1-minute load {os.getloadavg()[0]:.1f} after.\n\n" + "\n".join(lines)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
