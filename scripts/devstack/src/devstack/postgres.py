"""A private PostgreSQL server from the system's binaries: own data directory, own port."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg

from devstack.procs import as_service_user, chown_to, run

SERVICE_USER = "postgres"


def pg_bin_dir() -> Path:
    """Where initdb and pg_ctl live: $PG_BIN, else pg_config, else the newest Debian install."""
    if env := os.environ.get("PG_BIN"):
        return Path(env)
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
    )
    if candidates:
        return Path(candidates[-1])
    if pg_config := shutil.which("pg_config"):
        return Path(run([pg_config, "--bindir"]).stdout.strip())
    raise FileNotFoundError("PostgreSQL server binaries not found; install the postgresql package")


@dataclass
class PostgresServer:
    data_dir: Path
    port: int
    durable: bool = True  # False turns fsync off: for throwaway test instances only

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def _ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(as_service_user([str(pg_bin_dir() / "pg_ctl"), *args], SERVICE_USER))

    def start(self) -> None:
        if not (self.data_dir / "PG_VERSION").exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            chown_to(self.data_dir, SERVICE_USER)
            run(
                as_service_user(
                    [
                        str(pg_bin_dir() / "initdb"),
                        "-D",
                        str(self.data_dir),
                        "-U",
                        "postgres",
                        "-A",
                        "trust",
                        "-E",
                        "UTF8",
                        "--locale=C.UTF-8",
                        "--no-sync",
                    ],
                    SERVICE_USER,
                )
            )
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories='{self.data_dir}' -c max_connections=200"
        )
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._ctl(
            "start",
            "-D",
            str(self.data_dir),
            "-w",
            "-t",
            "60",
            "-l",
            str(self.data_dir / "server.log"),
            "-o",
            options,
        )

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._ctl("stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60")

    def is_running(self) -> bool:
        try:
            with psycopg.connect(self.admin_url, connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def create_database(self, name: str) -> str:
        """Create `name` (dropping any old one) and return its SQLAlchemy URL."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
