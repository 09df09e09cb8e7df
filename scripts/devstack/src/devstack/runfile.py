"""Read the Dapr multi-app run file (`dapr.yaml`): the one definition of apps, ports and flags."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class AppSpec:
    app_id: str
    app_dir: Path
    app_port: int
    dapr_http_port: int
    dapr_grpc_port: int
    dapr_internal_grpc_port: int
    metrics_port: int
    command: list[str]
    resources_path: Path
    config_file: Path
    log_level: str
    app_protocol: str
    env: dict[str, str]
    # Loopback locally; the compose file's sidecars listen on their pod's network, where
    # Prometheus reaches them.
    metrics_listen_address: str = "127.0.0.1"

    def with_ports(
        self, app: int, http: int, grpc: int, internal: int, metrics: int | None = None
    ) -> AppSpec:
        return replace(
            self, app_port=app, dapr_http_port=http, dapr_grpc_port=grpc,
            dapr_internal_grpc_port=internal,
            metrics_port=self.metrics_port if metrics is None else metrics,
        )  # fmt: skip

    def daprd_args(self, resources_path: Path | None = None) -> list[str]:
        """The sidecar's flags, as `dapr run -f` would pass them (no placement, no scheduler)."""
        return [
            "--app-id", self.app_id,
            "--app-port", str(self.app_port),
            "--app-protocol", self.app_protocol,
            "--dapr-http-port", str(self.dapr_http_port),
            "--dapr-grpc-port", str(self.dapr_grpc_port),
            "--dapr-internal-grpc-port", str(self.dapr_internal_grpc_port),
            "--dapr-listen-addresses", "127.0.0.1",
            "--resources-path", str(resources_path or self.resources_path),
            "--config", str(self.config_file),
            "--log-level", self.log_level,
            "--enable-metrics",
            "--metrics-port", str(self.metrics_port),
            "--metrics-listen-address", self.metrics_listen_address,
        ]  # fmt: skip


@dataclass(frozen=True)
class StorePorts:
    """Where `make run` starts its private PostgreSQL and Redis (dapr.yaml's `x-devstack`)."""

    postgres: int
    redis: int
    # The trace backend (OTLP/HTTP in; query API and UI) and Prometheus.
    otlp: int = 4318
    jaeger_ui: int = 16686
    jaeger_grpc: int = 16685
    prometheus: int = 9090


def load_store_ports(path: Path) -> StorePorts:
    """The `x-devstack` block of the run file: a key the run-file format does not define, kept
    there so that every port of the local stack is set in one file."""
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    ports = doc.get("x-devstack", {})
    return StorePorts(
        int(ports.get("postgresPort", 5433)),
        int(ports.get("redisPort", 6380)),
        int(ports.get("otlpPort", 4318)),
        int(ports.get("jaegerUiPort", 16686)),
        int(ports.get("jaegerGrpcPort", 16685)),
        int(ports.get("prometheusPort", 9090)),
    )


def load_run_file(path: Path) -> dict[str, AppSpec]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    base = path.parent
    common = doc.get("common", {})
    apps: dict[str, AppSpec] = {}
    for app in doc["apps"]:
        merged = {**common, **app}
        apps[app["appID"]] = AppSpec(
            app_id=app["appID"],
            app_dir=(base / app["appDirPath"]).resolve(),
            app_port=int(merged["appPort"]),
            dapr_http_port=int(merged["daprHTTPPort"]),
            dapr_grpc_port=int(merged["daprGRPCPort"]),
            dapr_internal_grpc_port=int(merged["daprInternalGRPCPort"]),
            metrics_port=int(merged["metricsPort"]),
            command=list(merged["command"]),
            resources_path=(base / merged["resourcesPath"]).resolve(),
            config_file=(base / merged["configFilePath"]).resolve(),
            log_level=merged.get("logLevel", "info"),
            app_protocol=merged.get("appProtocol", "http"),
            env={**common.get("env", {}), **app.get("env", {})},
        )
    return apps
