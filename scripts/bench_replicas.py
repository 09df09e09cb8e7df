"""Scale-out benchmark: the same load on one replica and on two of basket-api and catalog-api.

    uv run python scripts/bench_replicas.py [--seconds 10] [--connections 32]

It starts a local stack (throwaway PostgreSQL and Redis, every app with its own sidecar) with one
process of each app, measures, stops it, then does the same with two processes of basket-api and
of catalog-api, each with its own sidecar under the same app id (as `devstack up --replicas`).
For each it measures throughput at saturation (--connections clients, each sending its next
request at once, spread evenly over the replicas) of:
- basket GET (a buyer's basket of three lines; one sidecar state read and one bulk price read);
- basket add item (`POST /api/basket/items`: a catalog lookup by service invocation, a state
  read and an ETag-guarded write), one buyer per connection.
Errors are counted in every run and printed. On a 2-core machine every process of both stacks
competes for the same two cores, so the figure answers "does a second replica add capacity
here", not "how does it scale on a cluster".
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from devstack.pytest_plugin import throwaway_postgres
from devstack.stack import DEMO_JWT_SECRET, Stack, install_daprd
from eshop_common.auth import mint_token

APPS = ("basket-api", "catalog-api")


@dataclass
class Run:
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


async def saturate(
    request: Callable[[int], Awaitable[int]], connections: int, seconds: float
) -> Run:
    run, deadline = Run(), time.monotonic() + seconds
    start = time.monotonic()

    async def worker(n: int) -> None:
        while time.monotonic() < deadline:
            try:
                status = await request(n)
            except httpx.HTTPError as exc:
                run.errors[type(exc).__name__] = run.errors.get(type(exc).__name__, 0) + 1
                continue
            if status < 300:
                run.ok += 1
            else:
                run.errors[str(status)] = run.errors.get(str(status), 0) + 1

    await asyncio.gather(*(worker(n) for n in range(connections)))
    run.seconds = time.monotonic() - start
    return run


async def measure(stack: Stack, replicas: int, connections: int, seconds: float) -> dict[str, Run]:
    names = ["basket-api", *(f"basket-api-{n}" for n in range(2, replicas + 1))]
    clients = [
        httpx.AsyncClient(
            base_url=stack.url(names[n % len(names)]),
            headers={"Authorization": f"Bearer {mint_token(DEMO_JWT_SECRET, f'bench-{n}')}"},
            timeout=30,
            limits=httpx.Limits(max_connections=1),
        )
        for n in range(connections)
    ]
    try:
        for client in clients:  # a basket of three lines each, the read's subject
            for product in (1, 2, 3):
                (
                    await client.post("/api/basket/items", json={"productId": product})
                ).raise_for_status()

        async def read(n: int) -> int:
            return (await clients[n].get("/api/basket")).status_code

        async def add(n: int) -> int:
            product = 4 + (n % 40)
            resp = await clients[n].post("/api/basket/items", json={"productId": product})
            if resp.status_code == 422:  # the line is full (99): start it again
                await clients[n].delete(f"/api/basket/items/{product}")
            return resp.status_code

        return {
            "warm-up (basket GET, 1 s)": await saturate(read, connections, 1.0),
            "basket GET": await saturate(read, connections, seconds),
            "basket add item": await saturate(add, connections, seconds),
        }
    finally:
        for client in clients:
            await client.aclose()


def run_stack(replicas: int, database_url: str, args: argparse.Namespace) -> dict[str, Run]:
    stack = Stack(
        state_dir=Path(tempfile.mkdtemp(prefix="eshop-bench-replicas-")),
        daprd=install_daprd(),
        free_ports=True,
        durable=False,
        database_url=database_url,
        replicas=dict.fromkeys(APPS, replicas),
    )
    try:
        stack.start()
        for name in stack.instances:
            if name.startswith("basket-api"):
                stack.wait_invocable(name, "catalog-api")
        return asyncio.run(measure(stack, replicas, args.connections, args.seconds))
    finally:
        stack.stop()
        shutil.rmtree(stack.state_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args(argv)
    results: dict[int, dict[str, Run]] = {}
    with throwaway_postgres("eshop-bench-replicas-pg-") as postgres:
        for replicas in (1, 2):
            results[replicas] = run_stack(replicas, postgres.create_database(f"r{replicas}"), args)
    print(f"\n{args.connections} connections, {args.seconds:.0f} s a run, saturation\n")
    print("| request | 1 replica (req/s) | 2 replicas (req/s) | ratio | errors (1 / 2) |")
    print("|---|---:|---:|---:|---|")
    for name in results[1]:
        one, two = results[1][name], results[2][name]
        ratio = two.rate / one.rate if one.rate else float("nan")
        print(f"| {name} | {one.rate:,.0f} | {two.rate:,.0f} | {ratio:.2f} | "
              f"{one.errors or 0} / {two.errors or 0} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
