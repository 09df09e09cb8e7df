"""The local stack's trace and metrics backends: a private Jaeger (v2, in-memory storage) that the
apps and sidecars send OTLP to, and a private Prometheus (Debian's package) that scrapes every
app's /metrics and every sidecar's metrics port. Both listen on loopback only."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx
import yaml

from devstack.procs import die_with_parent, wait_until

REPO_ROOT = Path(__file__).resolve().parents[4]


def install_jaeger() -> Path:
    """Build or reuse the pinned Jaeger (scripts/install-jaeger) and return its path."""
    out = subprocess.run(
        [str(REPO_ROOT / "scripts" / "install-jaeger")],
        check=True,
        text=True,
        stdout=subprocess.PIPE,
    ).stdout
    return Path(out.strip().splitlines()[-1])


def jaeger_config(otlp_port: int, query_port: int, grpc_port: int, ui_assets: Path | None) -> Any:
    """Jaeger v2's configuration (an OpenTelemetry Collector's): OTLP/HTTP in, in-memory storage,
    the query API and UI out. Every listener is named, so none takes a default port that
    another Jaeger on the machine holds; the collector's own metrics are off for that reason."""
    query: dict[str, Any] = {
        "storage": {"traces": "memstore"},
        # On by default in v2: Jaeger would trace its own queries and send them over OTLP/gRPC
        # to localhost:4317, wherever that is.
        "enable_tracing": False,
        "http": {"endpoint": f"127.0.0.1:{query_port}"},
        "grpc": {"endpoint": f"127.0.0.1:{grpc_port}"},
    }
    if ui_assets is not None:
        query["ui"] = {"assets_path": str(ui_assets)}
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
            "telemetry": {"logs": {"level": "warn"}, "metrics": {"level": "none"}},
        },
        "extensions": {
            "jaeger_storage": {"backends": {"memstore": {"memory": {"max_traces": 50000}}}},
            "jaeger_query": query,
        },
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{otlp_port}"}}}},
        "processors": {"batch": {"timeout": "200ms"}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
    }


class BackendServer:
    """A backend process of the local stack: its log goes to `<work_dir>/<name>.log`, and it is
    running once `ready_url` answers 200."""

    name: ClassVar[str]
    work_dir: Path
    process: subprocess.Popen[bytes] | None

    @property
    def ready_url(self) -> str:
        raise NotImplementedError

    def _launch(self, argv: list[str]) -> None:
        """Start `argv` and wait (60 s at most) until it is ready. Raises RuntimeError, with the
        log's tail, if it exits first."""
        log = open(self.work_dir / f"{self.name}.log", "ab")  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )
        wait_until(self.is_running, timeout=60, what=f"{self.name} at {self.ready_url}")

    def is_running(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            tail = (self.work_dir / f"{self.name}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{tail}")
        try:
            return httpx.get(self.ready_url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@dataclass
class JaegerServer(BackendServer):
    name = "jaeger"
    binary: Path
    work_dir: Path
    otlp_port: int
    query_port: int
    grpc_port: int
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def otlp_endpoint(self) -> str:
        """For the apps' OTEL_EXPORTER_OTLP_ENDPOINT (the SDK appends /v1/traces)."""
        return f"http://127.0.0.1:{self.otlp_port}"

    @property
    def otlp_host_port(self) -> str:
        """For the sidecars' Configuration (tracing.otel.endpointAddress: host:port)."""
        return f"127.0.0.1:{self.otlp_port}"

    @property
    def url(self) -> str:
        """The query API (/api/traces, /api/services) and the UI."""
        return f"http://127.0.0.1:{self.query_port}"

    def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        ui = ui_assets_dir()
        config = self.work_dir / "jaeger.yaml"
        config.write_text(
            yaml.safe_dump(jaeger_config(self.otlp_port, self.query_port, self.grpc_port, ui))
        )
        self._launch([str(self.binary), "--config", str(config)])

    @property
    def ready_url(self) -> str:
        return f"{self.url}/api/services"


def pinned(name: str) -> str:
    """A pin from scripts/versions.env."""
    text = (REPO_ROOT / "scripts" / "versions.env").read_text()
    for line in text.splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1].strip().strip('"')
    raise KeyError(name)


def ui_assets_dir() -> Path | None:
    """A built jaeger-ui (its index.html and static/) for the query server to serve:
    $JAEGER_UI_ASSETS, else what scripts/install-jaeger-ui built into the cache. The Go module
    has no built UI; without one, the query API works and / shows Jaeger's placeholder page."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "eshop-dapr"
    candidates = [
        os.environ.get("JAEGER_UI_ASSETS", ""),
        str(cache / f"jaeger-ui-{pinned('JAEGER_UI_VERSION')}"),
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "index.html").is_file():
            return Path(candidate)
    return None


@dataclass(frozen=True)
class ScrapeTarget:
    job: str  # `eshop-app` or `daprd`
    app_id: str
    instance: str
    address: str  # host:port


def prometheus_config(targets: Iterable[ScrapeTarget], interval: str) -> Any:
    """One job for the apps' /metrics and one for the sidecars', each target labelled with its
    Dapr app id."""
    jobs: dict[str, list[dict[str, Any]]] = {}
    for target in targets:
        jobs.setdefault(target.job, []).append(
            {
                "targets": [target.address],
                "labels": {"app_id": target.app_id, "dapr_instance": target.instance},
            }
        )
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {"job_name": job, "metrics_path": "/metrics", "static_configs": configs}
            for job, configs in jobs.items()
        ],
    }


def prometheus_binary() -> Path | None:
    found = shutil.which("prometheus") or "/usr/bin/prometheus"
    return Path(found) if Path(found).is_file() else None


@dataclass
class PrometheusServer(BackendServer):
    name = "prometheus"
    binary: Path
    work_dir: Path
    port: int
    targets: list[ScrapeTarget]
    interval: str = "5s"
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(self.targets, self.interval)))
        self._launch(
            [
                str(self.binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.work_dir / 'data'}",
                "--storage.tsdb.retention.time=2d",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ]
        )

    @property
    def ready_url(self) -> str:
        return f"{self.url}/-/ready"
