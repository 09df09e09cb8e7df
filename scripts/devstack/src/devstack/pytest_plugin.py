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
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import psycopg
import pytest
from sqlalchemy.engine import make_url

from devstack.observability import install_jaeger
from devstack.postgres import PostgresServer
from devstack.procs import free_port
from devstack.redis import RedisServer
from devstack.stack import Stack, install_daprd


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


@contextmanager
def throwaway_postgres(prefix: str = "eshop-test-pg-") -> Iterator[PostgresServer]:
    """A private PostgreSQL on a free port, deleted afterwards."""
    # Not under pytest's temp dir: that is private to root, and the server may run as `postgres`.
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)
    server = PostgresServer(base / "data", free_port(), durable=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[DatabaseServer]:
    if url := os.environ.get("DATABASE_URL"):
        yield ExternalPostgres(url)
        return
    with throwaway_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer | None]:
    """The private Redis, or None when REDIS_URL names one that tests must not stop."""
    if os.environ.get("REDIS_URL"):
        yield None
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"), free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer | None) -> str:
    return redis_server.url if redis_server else os.environ["REDIS_URL"]


def new_database(server: DatabaseServer, prefix: str = "test") -> str:
    return server.create_database(f"{prefix}_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def daprd_path() -> Path:
    """The pinned daprd, built once by scripts/install-daprd and reused from its cache."""
    return install_daprd()


@pytest.fixture(scope="session")
def jaeger_path() -> Path:
    """The pinned Jaeger, built once by scripts/install-jaeger and reused from its cache."""
    return install_jaeger()


class StackFactory:
    """One running stack per state store, started on first use and kept until the session ends,
    so a fixture that holds one stays valid whichever store another test asks for."""

    def __init__(self, postgres: DatabaseServer, redis_url: str, daprd: Path, jaeger: Path) -> None:
        self._postgres = postgres
        self._redis_url = redis_url
        self._daprd = daprd
        self._jaeger = jaeger
        self._stacks: dict[str, Stack] = {}

    def get(self, state_store: str = "redis") -> Stack:
        if state_store in self._stacks:
            return self._stacks[state_store]
        state_dir = Path(tempfile.mkdtemp(prefix=f"eshop-stack-{state_store}-"))
        stack = Stack(
            state_dir=state_dir,
            daprd=self._daprd,
            # Traces and metrics for the Redis stack, which the observability tests read.
            jaeger_binary=self._jaeger if state_store == "redis" else None,
            prometheus=state_store == "redis",
            free_ports=True,
            durable=False,
            state_store=state_store,
            database_url=new_database(self._postgres, "stack"),
            # The Redis stack uses the session's Redis (tests look inside it and stop it); any
            # other gets a private one for its pub/sub, so the two stacks' sidecars, which share
            # app ids and so consumer groups, never take each other's events.
            redis_url=self._redis_url if state_store == "redis" else None,
        )
        try:
            stack.start()
        except BaseException:
            stack.stop()
            raise
        self._stacks[state_store] = stack
        return stack

    def close(self) -> None:
        for stack in self._stacks.values():
            stack.stop()
            shutil.rmtree(stack.state_dir, ignore_errors=True)
        self._stacks.clear()


@pytest.fixture(scope="session")
def stack_factory(
    postgres_server: DatabaseServer, redis_url: str, daprd_path: Path, jaeger_path: Path
) -> Iterator[StackFactory]:
    factory = StackFactory(postgres_server, redis_url, daprd_path, jaeger_path)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def stack(stack_factory: StackFactory) -> Stack:
    """The whole local stack from dapr.yaml (Redis state store), on free ports."""
    return stack_factory.get("redis")
