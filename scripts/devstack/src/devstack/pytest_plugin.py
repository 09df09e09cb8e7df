"""Fixtures that give tests real servers: a private PostgreSQL and Redis unless URLs are given.

Set DATABASE_URL (any database on a server where the user may CREATE DATABASE) or REDIS_URL to
use servers you already run; otherwise throwaway instances start under pytest's temp directory and
stop when the session ends.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import psycopg
import pytest
from sqlalchemy.engine import make_url

from devstack.postgres import PostgresServer
from devstack.procs import free_port
from devstack.redis import RedisServer


class DatabaseServer(Protocol):
    def create_database(self, name: str) -> str: ...


class ExternalPostgres:
    def __init__(self, url: str) -> None:
        self._url = make_url(url).set(drivername="postgresql+psycopg")

    def create_database(self, name: str) -> str:
        admin = self._url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self._url.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseServer]:
    if url := os.environ.get("DATABASE_URL"):
        yield ExternalPostgres(url)
        return
    # Not under pytest's temp dir: that is private to root, and the server may run as `postgres`.
    base = Path(tempfile.mkdtemp(prefix="eshop-test-pg-"))
    base.chmod(0o755)
    server = PostgresServer(base / "data", free_port(), durable=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"), free_port())
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def new_database(server: DatabaseServer, prefix: str = "test") -> str:
    return server.create_database(f"{prefix}_{uuid.uuid4().hex[:12]}")


def repo_root() -> Path:
    return Path(__file__).resolve().parents[4]
