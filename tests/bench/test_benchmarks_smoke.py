"""The benchmarks still run: a smoke run of each, a fraction of a second per row, so they
cannot rot between the runs whose figures are in docs/performance.md. The figures of a smoke run
mean nothing (the machine is busy with the other tests); only that every row is measured and no
request failed."""

from __future__ import annotations

import re
import subprocess
import sys

from devstack.stack import REPO_ROOT


def run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, f"scripts/{script}", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def error_counts(table: str) -> list[int]:
    """The `errors` column of each row of the Markdown tables in `table`."""
    counts = []
    for block in re.findall(r"(?:^\|.*\|\n)+", table, flags=re.M):
        header, _, *rows = block.splitlines()
        names = [c.strip() for c in header.strip("|").split("|")]
        if "errors" not in names:
            continue
        column = names.index("errors")
        counts += [int(row.strip("|").split("|")[column]) for row in rows]
    return counts


def test_the_basket_benchmark_measures_every_hop_without_errors():
    out = run(
        "bench_basket.py", "--seconds", "0.5", "--warmup", "0.2", "--rate", "50",
        "--connections", "4", "--max-load", "1000", "--attempts", "1",
    )  # fmt: skip
    for hop in ("redis HGET", "sidecar GET", "basket GET", "basket POST item"):
        assert f"| {hop} |" in out, out
    counts = error_counts(out)
    assert counts, out
    assert not any(counts), out


def test_the_catalog_benchmark_measures_every_scenario_without_errors():
    out = run(
        "bench_catalog.py", "--items", "300", "--rate", "50", "--duration", "1",
        "--warmup", "0.2", "--concurrency", "4", "--saturation-seconds", "1",
    )  # fmt: skip
    assert re.search(r"\b0 errors\b", out), out


def test_the_basket_profile_measures_every_part():
    out = run("profile_basket.py", "--requests", "20", "--rounds", "1")
    for request in ("bare FastAPI: empty async route", "GET /api/basket", "POST /api/basket/items"):
        assert f"{request} |" in out, out
    # Each in-process request's parts were found: the sidecar calls, once or three times.
    assert re.search(
        r"GET /api/basket \(three lines\) \| [\d,]+ \| [\d,]+ \| [\d,]+ \(1\.0 calls\)", out
    ), out
    assert re.search(r"POST /api/basket/items \| [\d,]+ \| [\d,]+ \| [\d,]+ \(3\.0 calls\)", out), (
        out
    )
