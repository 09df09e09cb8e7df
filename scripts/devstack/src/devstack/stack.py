"""The whole sample as local processes: PostgreSQL, Redis, each app with its daprd sidecar."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from devstack.observability import (
    JaegerServer,
    PrometheusServer,
    ScrapeTarget,
    prometheus_binary,
)
from devstack.postgres import PostgresServer
from devstack.procs import die_with_parent, free_port, wait_until
from devstack.redis import RedisServer
from devstack.runfile import AppSpec, load_run_file, load_store_ports

REPO_ROOT = Path(__file__).resolve().parents[4]
RUN_FILE = REPO_ROOT / "dapr.yaml"
DEMO_JWT_SECRET = "eshop-demo-jwt-secret-change-me-in-production"
DEMO_DAPR_API_TOKEN = "eshop-demo-dapr-api-token"
DEMO_APP_API_TOKEN = "eshop-demo-app-api-token"
STATE_STORES = ("redis", "postgresql")


def install_daprd() -> Path:
    """Build or reuse the pinned daprd (scripts/install-daprd) and return its path."""
    out = subprocess.run(
        [str(REPO_ROOT / "scripts" / "install-daprd")],
        check=True,
        text=True,
        stdout=subprocess.PIPE,
    ).stdout
    return Path(out.strip().splitlines()[-1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]

    def stop(self, timeout: float = 15) -> None:
        if self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=5)
        except ProcessLookupError:
            pass


# Ports of a further replica of an app: dapr.yaml's plus this much for each replica after the first.
REPLICA_PORT_STEP = 10


@dataclass
class Stack:
    """Start with `start()`, stop with `stop()`. Ports come from dapr.yaml unless `free_ports`.

    `replicas` runs more than one process of an app (`{"basket-api": 2}`), each with its own
    sidecar under the same app id, as a scaled-out deployment does: the second is the instance
    `basket-api-2`, on dapr.yaml's ports plus REPLICA_PORT_STEP (or free ports). Every method
    that takes an app id also takes an instance name.
    """

    state_dir: Path
    daprd: Path
    free_ports: bool = False
    durable: bool = True
    state_store: str = "redis"
    stream_logs: bool = False
    database_url: str | None = None
    redis_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)
    # Jaeger (built by scripts/install-jaeger) and Prometheus (Debian's package), started with
    # the stores; None: no trace backend (the apps record nothing, the sidecars export nothing).
    jaeger_binary: Path | None = None
    prometheus: bool = False
    # The sidecars' sampling rate for traces no caller sampled (components/config/local.yaml).
    sampling_rate: str = "1"
    apps: dict[str, AppSpec] = field(init=False)
    instances: dict[str, AppSpec] = field(init=False)
    postgres: PostgresServer | None = field(default=None, init=False)
    redis: RedisServer | None = field(default=None, init=False)
    jaeger: JaegerServer | None = field(default=None, init=False)
    prometheus_server: PrometheusServer | None = field(default=None, init=False)
    procs: dict[str, Proc] = field(default_factory=dict, init=False)
    _resources: Path | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.state_store not in STATE_STORES:
            raise ValueError(f"state_store must be one of {STATE_STORES}")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.apps = load_run_file(RUN_FILE)
        if unknown := set(self.replicas) - set(self.apps):
            raise ValueError(f"replicas of apps dapr.yaml does not define: {sorted(unknown)}")
        if self.free_ports:
            self.apps = {
                app_id: spec.with_ports(*(free_port() for _ in range(5)))
                for app_id, spec in self.apps.items()
            }
        self.instances = {}
        for app_id, spec in self.apps.items():
            self.instances[app_id] = spec
            for n in range(2, self.replicas.get(app_id, 1) + 1):
                ports = (
                    [free_port() for _ in range(5)]
                    if self.free_ports
                    else [
                        port + (n - 1) * REPLICA_PORT_STEP
                        for port in (
                            spec.app_port,
                            spec.dapr_http_port,
                            spec.dapr_grpc_port,
                            spec.dapr_internal_grpc_port,
                            spec.metrics_port,
                        )
                    ]
                )
                self.instances[f"{app_id}-{n}"] = spec.with_ports(*ports)

    # -- infrastructure -------------------------------------------------------------------
    def start_infra(self) -> None:
        if self.database_url is None:
            pg_dir = self.state_dir / "postgres"
            pg_port = free_port() if self.free_ports else load_store_ports(RUN_FILE).postgres
            self.postgres = PostgresServer(pg_dir, pg_port, durable=self.durable)
            if not self.postgres.is_running():
                self.state_dir.chmod(0o755)
                self.postgres.start()
            self.database_url = self.postgres.url("postgres")
        if self.redis_url is None:
            self.redis = RedisServer(
                self.state_dir / "redis",
                free_port() if self.free_ports else load_store_ports(RUN_FILE).redis,
            )
            self.redis.start()
            self.redis_url = self.redis.url
        ports = load_store_ports(RUN_FILE)
        if self.jaeger_binary is not None and self.jaeger is None:
            self.jaeger = JaegerServer(
                self.jaeger_binary,
                self.state_dir / "jaeger",
                *(
                    (free_port(), free_port(), free_port())
                    if self.free_ports
                    else (ports.otlp, ports.jaeger_ui, ports.jaeger_grpc)
                ),
            )
            self.jaeger.start()
        binary = prometheus_binary()
        if self.prometheus and binary is not None and self.prometheus_server is None:
            self.prometheus_server = PrometheusServer(
                binary,
                self.state_dir / "prometheus",
                free_port() if self.free_ports else ports.prometheus,
                self.scrape_targets(),
            )
            self.prometheus_server.start()

    def scrape_targets(self) -> list[ScrapeTarget]:
        """Every instance's /metrics and its sidecar's metrics port."""
        targets = []
        for name, spec in self.instances.items():
            targets.append(
                ScrapeTarget("eshop-app", spec.app_id, name, f"127.0.0.1:{spec.app_port}")
            )
            targets.append(
                ScrapeTarget("daprd", spec.app_id, f"{name}-dapr", f"127.0.0.1:{spec.metrics_port}")
            )
        return targets

    def init_catalog_database(self) -> None:
        subprocess.run(
            ["uv", "run", "--no-sync", "catalog-db", "init"],
            cwd=REPO_ROOT, env=self._app_env(self.apps["catalog-api"]), check=True,
        )  # fmt: skip

    # -- apps and sidecars ----------------------------------------------------------------
    @property
    def shared_env(self) -> dict[str, str]:
        return {
            "JWT_SECRET": DEMO_JWT_SECRET,
            "DAPR_API_TOKEN": DEMO_DAPR_API_TOKEN,
            "APP_API_TOKEN": DEMO_APP_API_TOKEN,
            **self.env,
        }

    def _telemetry_env(self, spec: AppSpec) -> dict[str, str]:
        """The standard OpenTelemetry variables (eshop_common.telemetry reads them)."""
        if self.jaeger is None:
            return {
                "OTEL_SDK_DISABLED": "false",
                "OTEL_SERVICE_NAME": spec.app_id,
                "OTEL_TRACES_EXPORTER": "none",
            }
        return {
            "OTEL_SDK_DISABLED": "false",
            "OTEL_SERVICE_NAME": spec.app_id,
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.jaeger.otlp_endpoint,
            # Spans reach Jaeger within a second or so instead of the default five.
            "OTEL_BSP_SCHEDULE_DELAY": "1000",
        }

    def _app_env(self, spec: AppSpec, extra: dict[str, str] | None = None) -> dict[str, str]:
        assert self.database_url is not None
        return {
            **os.environ,
            **self._telemetry_env(spec),
            **self.shared_env,
            **spec.env,
            "APP_PORT": str(spec.app_port),
            "DAPR_HTTP_PORT": str(spec.dapr_http_port),
            "DAPR_GRPC_PORT": str(spec.dapr_grpc_port),
            "DATABASE_URL": self.database_url,
            **(extra or {}),
        }

    def _daprd_env(self) -> dict[str, str]:
        assert self.redis_url is not None
        assert self.database_url is not None
        redis_host = self.redis_url.removeprefix("redis://").split("/")[0]
        pg = self.database_url.replace("postgresql+psycopg://", "postgres://")
        return {
            **os.environ,
            **self.shared_env,
            "REDIS_HOST": redis_host,
            "REDIS_PASSWORD": "",
            "STATE_PG_CONNECTION_STRING": pg,
            "NAME_RESOLUTION_DB": str(self.state_dir / "nameresolution.db"),
            # Register and call sidecars on loopback: nothing leaves this machine.
            "DAPR_HOST_IP": "127.0.0.1",
            "DAPR_TRACING_SAMPLING_RATE": self.sampling_rate,
            "DAPR_OTLP_ENDPOINT": self.jaeger.otlp_host_port if self.jaeger else "",
        }

    def resources_path(self) -> Path:
        """The sidecars' resources directory: components/ itself for the Redis store; for
        another store, a copy with that store's statestore file in place of the Redis one, made
        once per Stack: sidecars watch the directory, so it must not be replaced under them."""
        components = REPO_ROOT / "components"
        if self.state_store == "redis":
            return components
        if self._resources is None:
            target = self.state_dir / f"resources-{self.state_store}"
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            for path in components.glob("*.yaml"):
                if path.name != "statestore.yaml":
                    shutil.copy(path, target / path.name)
            store_file = components / self.state_store / "statestore.yaml"
            shutil.copy(store_file, target / "statestore.yaml")
            self._resources = target
        return self._resources

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> Proc:
        log_path = self.state_dir / "logs" / f"{name}.log"
        log_path.parent.mkdir(exist_ok=True)
        popen = subprocess.Popen(
            argv, cwd=cwd, env=env, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
        )  # fmt: skip
        threading.Thread(
            target=_pump, args=(popen.stdout, log_path, name if self.stream_logs else None),
            daemon=True,
        ).start()  # fmt: skip
        proc = Proc(name, popen)
        self.procs[name] = proc
        return proc

    def start_sidecar(
        self, name: str, resources: Path | None = None, extra_env: dict[str, str] | None = None
    ) -> None:
        """Start `name`'s daprd, with the stack's resources or those in `resources`."""
        spec = self.instances[name]
        args = spec.daprd_args(resources or self.resources_path())
        env = {**self._daprd_env(), **(extra_env or {})}
        self._spawn(f"{name}-dapr", [str(self.daprd), *args], env, REPO_ROOT)

    def start_app(self, name: str, extra_env: dict[str, str] | None = None) -> None:
        spec = self.instances[name]
        self._spawn(name, spec.command, self._app_env(spec, extra_env), spec.app_dir)

    def start_extra_app(self, name: str, app_id: str, port: int, env: dict[str, str]) -> str:
        """Another process of `app_id`'s code on `port`, using the same sidecar: for experiments."""
        spec = self.apps[app_id].with_ports(
            port, self.apps[app_id].dapr_http_port, self.apps[app_id].dapr_grpc_port,
            self.apps[app_id].dapr_internal_grpc_port,
        )  # fmt: skip
        self._spawn(name, spec.command, self._app_env(spec, env), spec.app_dir)
        url = f"http://127.0.0.1:{port}"
        self.wait_ready(name, url)
        return url

    def stop_process(self, name: str) -> None:
        if proc := self.procs.pop(name, None):
            proc.stop()

    def restart_exited(self) -> list[str]:
        """Start again every app or sidecar of dapr.yaml whose process has exited, as compose's
        `restart: unless-stopped` does; return their names. A stopped process (`stop_process`)
        is not restarted. Other processes that exited raise, as in `check_alive`."""
        restarted = []
        for name, proc in list(self.procs.items()):
            if proc.popen.poll() is None:
                continue
            if name.endswith("-dapr") and name.removesuffix("-dapr") in self.instances:
                self.start_sidecar(name.removesuffix("-dapr"))
            elif name in self.instances:
                self.start_app(name)
            else:
                self.check_alive()
            restarted.append(f"{name} (exit code {proc.popen.returncode})")
        return restarted

    def check_alive(self) -> None:
        """Raise if any process of the stack has exited."""
        for name, proc in self.procs.items():
            if proc.popen.poll() is not None:
                tail = self.log_text(name)[-3000:]
                raise RuntimeError(f"{name} exited with {proc.popen.returncode}:\n{tail}")

    def log_text(self, name: str) -> str:
        return (self.state_dir / "logs" / f"{name}.log").read_text(errors="replace")

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.instances[name].app_port}"

    def dapr_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.instances[name].dapr_http_port}"

    def wait_ready(self, name: str, url: str | None = None, timeout: float = 90) -> None:
        url = url or self.url(name)

        def ready() -> bool:
            self.check_alive()
            try:
                return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=timeout, what=f"{name} at {url}", interval=0.25)

    def wait_invocable(self, caller: str, callee: str, timeout: float = 30) -> None:
        """Wait until `caller`'s sidecar reaches `callee` by service invocation."""
        url = f"{self.dapr_url(caller)}/v1.0/invoke/{callee}/method/healthz"
        headers = {"dapr-api-token": self.shared_env["DAPR_API_TOKEN"]}

        def reachable() -> bool:
            try:
                return httpx.get(url, headers=headers, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(reachable, timeout=timeout, what=f"{callee} from {caller}", interval=0.25)

    def start_app_with_sidecar(self, app_id: str) -> None:
        self.start_sidecar(app_id)
        self.start_app(app_id)
        self.wait_ready(app_id)

    def start(self) -> None:
        self.start_infra()
        self.init_catalog_database()
        for name in self.instances:
            self.start_sidecar(name)
            self.start_app(name)
        for name in self.instances:
            self.wait_ready(name)

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop_process(name)
        if self.prometheus_server:
            self.prometheus_server.stop()
        if self.jaeger:
            self.jaeger.stop()
        if self.redis:
            self.redis.stop()
        if self.postgres:
            self.postgres.stop()


def _pump(stream: IO[bytes] | None, log_path: Path, prefix: str | None) -> None:
    if stream is None:
        return
    with log_path.open("ab") as log:
        for line in iter(stream.readline, b""):
            log.write(line)
            log.flush()
            if prefix is not None:
                sys.stdout.write(f"{prefix:>16} | {line.decode(errors='replace')}")
                sys.stdout.flush()
