"""daprd's build and memory: the build the sample uses, with only the components it loads, next
to the `allcomponents` build of the same release, in the same run.

    uv run python scripts/bench_daprd.py [--requests 2000]

The sample's build is scripts/install-daprd's (the component registrations that
scripts/versions.env's DAPRD_COMPONENTS names). The baseline is built here from the unchanged
pinned dapr module with `-tags allcomponents` (about 140 registrations), into a temporary file.
For each it prints the build time, the file size, and the memory of a sidecar started with
components/ against a throwaway Redis, after start-up and after --requests state writes and reads
through its HTTP API, read from /proc/<pid>/smaps_rollup and split into private memory (anonymous
pages: heap and stacks, what each sidecar costs on its own) and file-backed pages (the binary's
text and data, shared by every daprd started from the same file and dropped by the kernel under
pressure). Build times depend on Go's build cache: a first build compiles every package it needs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from devstack.procs import free_port, wait_until
from devstack.redis import RedisServer
from devstack.stack import DEMO_DAPR_API_TOKEN, REPO_ROOT, install_daprd


def dapr_version() -> str:
    for line in (REPO_ROOT / "scripts" / "versions.env").read_text().splitlines():
        if line.startswith("DAPR_VERSION="):
            return line.split("=", 1)[1]
    raise SystemExit("no DAPR_VERSION in scripts/versions.env")


def build_allcomponents(version: str, target: Path) -> float:
    """Build daprd with every registration (`allcomponents`) into `target`; return seconds."""
    module = json.loads(
        subprocess.run(["go", "mod", "download", "-json", f"github.com/dapr/dapr@v{version}"],
                       check=True, capture_output=True, text=True).stdout
    )["Dir"]  # fmt: skip
    flags = (f"-s -w -X github.com/dapr/dapr/pkg/buildinfo.version={version} "
             f"-X github.com/dapr/kit/logger.DaprVersion={version}")  # fmt: skip
    start = time.monotonic()
    subprocess.run(
        ["go", "build", "-trimpath", "-tags", "allcomponents", "-ldflags", flags,
         "-o", str(target), "./cmd/daprd"],
        cwd=module, env={**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}, check=True,
    )  # fmt: skip
    return time.monotonic() - start


@dataclass
class Memory:
    private_mb: float
    file_backed_mb: float
    rss_mb: float


def memory_of(pid: int) -> Memory:
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0]) / 1024
    return Memory(fields["Anonymous"], fields["Rss"] - fields["Anonymous"], fields["Rss"])


def run_sidecar(daprd: Path, redis_url: str, requests: int) -> tuple[Memory, Memory]:
    http_port = free_port()
    state_dir = Path(tempfile.mkdtemp(prefix="bench-daprd-"))
    env = {**os.environ, "REDIS_HOST": redis_url.removeprefix("redis://").split("/")[0],
           "REDIS_PASSWORD": "", "DAPR_API_TOKEN": DEMO_DAPR_API_TOKEN, "DAPR_HOST_IP": "127.0.0.1",
           "NAME_RESOLUTION_DB": str(state_dir / "nr.db"),
           # No tracing: this measures the sidecar's state path alone.
           "DAPR_TRACING_SAMPLING_RATE": "0", "DAPR_OTLP_ENDPOINT": ""}  # fmt: skip
    args = [str(daprd), "--app-id", "basket-api", "--dapr-http-port", str(http_port),
            "--dapr-grpc-port", str(free_port()), "--dapr-internal-grpc-port", str(free_port()),
            "--dapr-listen-addresses", "127.0.0.1", "--enable-metrics=false",
            "--resources-path", str(REPO_ROOT / "components"),
            "--config", str(REPO_ROOT / "components" / "config" / "local.yaml")]  # fmt: skip
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{http_port}"
        headers = {"dapr-api-token": DEMO_DAPR_API_TOKEN}

        def healthy() -> bool:
            try:
                return httpx.get(f"{url}/v1.0/healthz", timeout=1).status_code == 204
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout=60, what="daprd")
        time.sleep(2)
        started = memory_of(proc.pid)
        with httpx.Client(base_url=url, headers=headers) as dapr:
            for n in range(requests):
                key = f"bench-{n % 100}"
                dapr.post("/v1.0/state/statestore", json=[{"key": key, "value": {"n": n}}])
                dapr.get(f"/v1.0/state/statestore/{key}")
        return started, memory_of(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(state_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args(argv)
    version = dapr_version()
    start = time.monotonic()
    sample = install_daprd()
    sample_seconds = time.monotonic() - start
    full = Path(tempfile.mkdtemp(prefix="daprd-allcomponents-")) / "daprd"
    print(f"building daprd {version} with -tags allcomponents...", flush=True)
    full_seconds = build_allcomponents(version, full)
    redis = RedisServer(Path(tempfile.mkdtemp(prefix="bench-daprd-redis-")), free_port())
    redis.start()
    try:
        rows = []
        builds = [("the sample's components", sample, sample_seconds),
                  ("allcomponents (baseline)", full, full_seconds)]  # fmt: skip
        for name, binary, built in builds:
            started, loaded = run_sidecar(binary, redis.url, args.requests)
            rows.append((name, binary.stat().st_size / 1e6, built, started, loaded))
    finally:
        redis.stop()
        shutil.rmtree(full.parent, ignore_errors=True)
    print(
        "\n| build | binary (MB) | build (s) | private after start / after load (MB) "
        "| file-backed (MB) | RSS (MB) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, size, built, started, loaded in rows:
        private = f"{started.private_mb:.0f} / {loaded.private_mb:.0f}"
        print(f"| {name} | {size:.0f} | {built:.0f} | {private} "
              f"| {loaded.file_backed_mb:.0f} | {loaded.rss_mb:.0f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
