"""Catalog benchmark: the service over HTTP next to the same SQL run directly through psycopg.

    uv run python scripts/bench_catalog.py [--items 10000] [--rate 300] [--duration 10]

It starts its own throwaway PostgreSQL, migrates and seeds a database with --items items, runs the
catalog with uvicorn as a real process (one worker), and for each request kind measures:
- latency p50/p99 at a fixed open-loop rate (a request is sent on schedule whether or not earlier
  ones have finished, and latency counts from the scheduled time, so a stall is not hidden);
- throughput at saturation (--concurrency connections, each sending its next request at once).
The service and direct SQL are measured in alternating one-second slices.
"Direct SQL" runs the very statements the service's repository builds, compiled by SQLAlchemy,
on a psycopg async connection pool in a transaction each, with the same schedule.
The service runs with tracing off (OTEL_SDK_DISABLED=true) unless --tracing is given.
It prints a Markdown table (paste it into docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from catalog.db_cli import load_seed, migrate
from catalog.repository import (
    ItemFilter,
    Query,
    count_items_query,
    items_by_ids_query,
    page_items_query,
)
from catalog.seed import load_seed_file
from devstack.postgres import PostgresServer
from devstack.procs import free_port, wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGE_SIZE = 10
SEARCH_TEXT = "waterproof jacket"
BRAND_ID = 3
# The item row asks for this many random ids in turn; direct SQL prepares this many requests.
STATEMENT_SETS = 4096
VARIANTS = [
    "Classic",
    "Pro",
    "Lite",
    "Storm",
    "Trail",
    "Summit",
    "Canyon",
    "Glacier",
    "Forest",
    "Coastal",
    "Desert",
    "Tundra",
    "Ember",
    "Harbor",
    "Meadow",
    "Nomad",
    "Pioneer",
    "Quest",
    "Ranger",
    "Voyager",
]

Op = Callable[[int], Awaitable[None]]
DIALECT = PGDialect_psycopg()  # type: ignore[no-untyped-call]


# ---- data --------------------------------------------------------------------------------------


def fill_catalog(url: str, total: int) -> None:
    """The seed, then generated items until there are `total`, then VACUUM ANALYZE."""
    migrate(url)
    load_seed(url)
    seed = load_seed_file()["items"]
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        brands: dict[str, int] = dict(conn.execute("SELECT name, id FROM catalog_brand").fetchall())
        types: dict[str, int] = dict(conn.execute("SELECT name, id FROM catalog_type").fetchall())
        existing = conn.execute("SELECT count(*) FROM catalog_item").fetchone()
        missing = total - (existing[0] if existing else 0)
        rnd = random.Random(42)  # noqa: S311 - test data, not secrets
        columns = (
            "name, description, price, picture_file_name, catalog_brand_id, catalog_type_id, "
            "available_stock, restock_threshold, max_stock_threshold"
        )
        with conn.cursor().copy(f"COPY catalog_item ({columns}) FROM STDIN") as copy:
            for n in range(missing):
                item = seed[n % len(seed)]
                variant = VARIANTS[(n // len(seed)) % len(VARIANTS)]
                copy.write_row(
                    (
                        f"{item['name']} {variant} {n:05d}",
                        f"{variant} edition. {item['description']}",
                        (Decimal(item["price"]) * Decimal(rnd.randint(80, 120)) / 100).quantize(
                            Decimal("0.01")
                        ),
                        item["pictureFileName"],
                        brands[item["brand"]],
                        types[item["type"]],
                        rnd.randint(0, 500),
                        10,
                        600,
                    )
                )
        conn.execute("VACUUM ANALYZE")


# ---- load generation ---------------------------------------------------------------------------


@dataclass
class Result:
    latencies_ms: list[float]
    errors: int
    elapsed: float

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.elapsed

    def __add__(self, other: Result) -> Result:
        return Result(
            self.latencies_ms + other.latencies_ms,
            self.errors + other.errors,
            self.elapsed + other.elapsed,
        )


async def open_loop(op: Op, rate: float, duration: float) -> Result:
    """Send request i at start + i/rate; latency is measured from that scheduled instant."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0

    async def one(i: int, scheduled: float) -> None:
        nonlocal errors
        try:
            await op(i)
        except Exception as exc:
            errors += 1
            if errors == 1:
                print(f"  first error: {exc!r}", file=sys.stderr)
            return
        latencies.append((loop.time() - scheduled) * 1000)

    tasks = []
    start = loop.time() + 0.05
    for i in range(int(rate * duration)):
        scheduled = start + i / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    return Result(latencies, errors, loop.time() - start)


async def saturate(op: Op, concurrency: int, duration: float) -> Result:
    """`concurrency` workers, each sending its next request as soon as the last one answered."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0
    deadline = loop.time() + duration
    counter = iter(range(10**9))

    async def worker() -> None:
        nonlocal errors
        while loop.time() < deadline:
            sent = loop.time()
            try:
                await op(next(counter))
            except Exception:
                errors += 1
                continue
            latencies.append((loop.time() - sent) * 1000)

    start = loop.time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(latencies, errors, loop.time() - start)


# ---- the two ways of asking --------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Callable[[int], str]
    statements: Callable[[int], list[Query]]
    # Bound values that differ on every request (a cache-busting search word, the next id),
    # merged over the statements compiled for request `i % STATEMENT_SETS`, so that the
    # direct-SQL client does not pay for compiling a statement per request and the service does.
    fresh: Callable[[int], dict[str, Any]] | None = None


def make_scenarios(max_id: int) -> list[Scenario]:
    rnd = random.Random(7)  # noqa: S311 - test data, not secrets
    ids = [rnd.randint(1, max_id) for _ in range(STATEMENT_SETS)]

    def page(i: int) -> int:
        return i % 5

    def list_stmts(f: ItemFilter, i: int) -> list[Query]:
        return [count_items_query(f), page_items_query(f, page(i) * PAGE_SIZE, PAGE_SIZE)]

    brand = ItemFilter(brand_id=BRAND_ID)
    search = ItemFilter(text=SEARCH_TEXT)
    q = SEARCH_TEXT.replace(" ", "+")
    base = f"/api/catalog/items?pageSize={PAGE_SIZE}"
    return [
        Scenario(
            "list page (no filter)",
            lambda i: f"{base}&pageIndex={page(i)}",
            lambda i: list_stmts(ItemFilter(), i),
        ),
        Scenario(
            f"list page, brandId={BRAND_ID}",
            lambda i: f"{base}&pageIndex={page(i)}&brandId={BRAND_ID}",
            lambda i: list_stmts(brand, i),
        ),
        Scenario(
            f'list page, q="{SEARCH_TEXT}"',
            lambda i: f"{base}&pageIndex={page(i)}&q={q}",
            lambda i: list_stmts(search, i),
        ),
        Scenario(
            "item by id",
            lambda i: f"/api/catalog/items/{ids[i % len(ids)]}",
            lambda i: [items_by_ids_query([ids[i % len(ids)]])],
        ),
        # Every request a cache miss, by construction: a search that no earlier request made
        # (`or u<i>` matches no item, so the rows are those of the search above)...
        Scenario(
            f'list page, q="{SEARCH_TEXT} or u<i>" (a miss each)',
            lambda i: f"{base}&pageIndex={page(i)}&q={q}+or+u{i}",
            lambda i: list_stmts(ItemFilter(text=f"{SEARCH_TEXT} or u{i}"), i),
            lambda i: {"text": f"{SEARCH_TEXT} or u{i}"},
        ),
        # ...and every item in turn, more of them than the read cache holds (the hit ratio
        # column checks that both are misses).
        Scenario(
            "item by id, every id in turn (a miss each)",
            lambda i: f"/api/catalog/items/{1 + i % max_id}",
            lambda i: [items_by_ids_query([1 + i % max_id])],
            lambda i: {"ids_1": 1 + i % max_id},
        ),
    ]


def compile_for_psycopg(query: Query, compiled: dict[int, Any]) -> tuple[str, dict[str, Any]]:
    """Exactly what SQLAlchemy sends for these values (expanding IN lists included). `compiled`
    keeps each statement's compiled form by statement, so a shape is compiled once."""
    stmt, params = query
    if id(stmt) not in compiled:
        compiled[id(stmt)] = (stmt, stmt.compile(dialect=DIALECT))  # the statement kept alive
    expanded = compiled[id(stmt)][1].construct_expanded_state(params)
    return expanded.statement, dict(expanded.parameters)


# Each op numbers its own requests from 0 across every slice and phase, so request n of the
# service and request n of direct SQL ask the same thing, and a row whose every request is meant
# to be new (a miss each) never repeats one (the slices' own counters restart at 0).


def http_op(session: aiohttp.ClientSession, scenario: Scenario) -> Op:
    sequence = itertools.count()

    async def op(_: int) -> None:
        i = next(sequence)
        async with session.get(scenario.path(i)) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")

    return op


def sql_op(pool: AsyncConnectionPool, scenario: Scenario) -> Op:
    # Request i sends the statements of request i % STATEMENT_SETS, all compiled here, before
    # any clock starts: compiling is SQLAlchemy's work, which direct SQL stands for not doing.
    compiled: dict[int, Any] = {}
    prepared = [
        [compile_for_psycopg(s, compiled) for s in scenario.statements(key)]
        for key in range(STATEMENT_SETS)
    ]
    sequence = itertools.count()

    async def op(_: int) -> None:
        i = next(sequence)
        fresh = scenario.fresh(i) if scenario.fresh else {}
        async with pool.connection() as conn, conn.transaction():
            for sql, params in prepared[i % STATEMENT_SETS]:
                cursor = await conn.execute(sql, {**params, **fresh} if fresh else params)
                await cursor.fetchall()

    return op


# ---- orchestration -----------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    service: Result
    direct: Result
    service_sat: Result
    direct_sat: Result
    # Of the service's requests after the warm-up, the share its read cache answered (None: a
    # service without one).
    hit_ratio: float | None = None


CACHE_COUNTER = "catalog_read_cache_requests_total"


async def cache_outcomes(session: aiohttp.ClientSession) -> dict[str, float]:
    """The service's read cache counters from /metrics: {"hit": n, "miss": n}, or {}."""
    async with session.get("/metrics") as response:
        text = await response.text()
    outcomes = {}
    for line in text.splitlines():
        if line.startswith(CACHE_COUNTER + "{"):
            labels, value = line[len(CACHE_COUNTER) :].rsplit(" ", 1)
            outcomes[labels.split('outcome="', 1)[1].split('"', 1)[0]] = float(value)
    return outcomes


async def measure(
    base_url: str, dsn: str, scenarios: list[Scenario], args: argparse.Namespace
) -> list[Row]:
    rows = []
    connector = aiohttp.TCPConnector(limit=64)
    async with (
        aiohttp.ClientSession(base_url, connector=connector) as session,
        AsyncConnectionPool(dsn, min_size=16, max_size=16, open=False) as pool,
    ):
        await pool.open(wait=True)
        for scenario in scenarios:
            service, direct = http_op(session, scenario), sql_op(pool, scenario)
            # Warm caches, connections and prepared plans; its errors count with the open loop's.
            warm = [await open_loop(op, args.rate, args.warmup) for op in (service, direct)]
            before = await cache_outcomes(session)
            # Service and direct SQL take turns in one-second slices, so a neighbour's burst of
            # CPU on a shared machine lands on both sides alike instead of on one of them.
            slices = [Result([], w.errors, 0.0) for w in warm] + [Result([], 0, 0.0)] * 2
            for _ in range(max(1, round(args.duration))):
                slices[0] += await open_loop(
                    service, args.rate, args.duration / round(args.duration)
                )
                slices[1] += await open_loop(
                    direct, args.rate, args.duration / round(args.duration)
                )
            for _ in range(max(1, round(args.saturation_seconds))):
                step = args.saturation_seconds / round(args.saturation_seconds)
                slices[2] += await saturate(service, args.concurrency, step)
                slices[3] += await saturate(direct, args.concurrency, step)
            after = await cache_outcomes(session)
            counts = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
            hits = counts.get("hit", 0.0) + counts.get("not_modified", 0.0)
            total = sum(counts.values())
            rows.append(Row(scenario.name, *slices, hits / total if total else None))
            print(f"  measured: {scenario.name}", file=sys.stderr)
    return rows


def table(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [
        f"| request | service p50 | service p99 | direct SQL p50 | direct SQL p99 | ratio p50 "
        f"| service req/s @{args.concurrency} | direct SQL req/s @{args.concurrency} "
        "| ratio req/s | cache hits |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r.service.pct(0.5) / r.direct.pct(0.5)
        throughput = r.service_sat.rate / r.direct_sat.rate
        hits = "n/a" if r.hit_ratio is None else f"{r.hit_ratio:.0%}"
        lines.append(
            f"| {r.scenario} | {r.service.pct(0.5):.2f} ms | {r.service.pct(0.99):.2f} ms "
            f"| {r.direct.pct(0.5):.2f} ms | {r.direct.pct(0.99):.2f} ms | {ratio:.1f} "
            f"| {r.service_sat.rate:,.0f} | {r.direct_sat.rate:,.0f} | {throughput:.2f} "
            f"| {hits} |"
        )
    errors = sum(r.service.errors + r.direct.errors + r.service_sat.errors for r in rows)
    lines.append("")
    lines.append(
        f"{args.items:,} items; open loop at {args.rate:g} req/s for {args.duration:g} s per cell; "
        f"saturation with {args.concurrency} connections for {args.saturation_seconds:g} s; "
        f"{errors} errors. {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{args.pg_version}; service tracing {'on' if args.tracing else 'off'}; "
        f"1-minute load average {args.load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after (anything above ~0.5 before means the machine was shared)."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--saturation-seconds", type=float, default=5)
    parser.add_argument(
        "--tracing", action="store_true", help="run the service with tracing on (OTLP export)"
    )
    args = parser.parse_args()
    args.load_before = os.getloadavg()[0]

    base = Path(tempfile.mkdtemp(prefix="catalog-bench-pg-"))
    base.chmod(0o755)  # the server runs as `postgres` and must reach its data dir
    server = PostgresServer(base / "data", free_port(), durable=False)
    service: subprocess.Popen[bytes] | None = None
    try:
        print("starting PostgreSQL and loading the catalog...", file=sys.stderr)
        server.start()
        url = server.create_database("catalog_bench")
        fill_catalog(url, args.items)
        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn) as conn:
            version_row = conn.execute("SHOW server_version").fetchone()
            args.pg_version = f"PostgreSQL {version_row[0] if version_row else '?'}"
            item_row = conn.execute("SELECT max(id) FROM catalog_item").fetchone()
        assert item_row is not None

        port = free_port()
        env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "warning"}
        if not args.tracing:
            # What the catalog itself adds; tracing's own cost is measured in the Tracing
            # section of docs/performance.md (it about doubles a read's CPU).
            env["OTEL_SDK_DISABLED"] = "true"
        service = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "catalog.main:app",
                "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                "--no-access-log", "--log-level", "warning",
            ],
            env=env,
            cwd=REPO_ROOT,
        )  # fmt: skip
        base_url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                import urllib.request

                with urllib.request.urlopen(f"{base_url}/readyz", timeout=1) as response:  # noqa: S310
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_until(ready, timeout=30, what="the catalog service")
        print("measuring...", file=sys.stderr)
        scenarios = make_scenarios(int(item_row[0]))
        started = time.monotonic()
        rows = asyncio.run(measure(base_url, dsn, scenarios, args))
        print(f"done in {time.monotonic() - started:.0f} s", file=sys.stderr)
        print(table(rows, args))
    finally:
        if service is not None:
            service.terminate()
            service.wait(timeout=15)
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
