"""The compose stack that `make compose-test` started, driven with the docker CLI a user has."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from devstack import procs
from devstack.stack import DEMO_JWT_SECRET, REPO_ROOT
from eshop_common.auth import mint_token


def docker(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(
        ["docker", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
    return result.stdout


def compose(*args: str, timeout: float = 300) -> str:
    return docker("compose", *args, timeout=timeout)


@dataclass
class Container:
    """One service's container as the engine reports it (`docker inspect`)."""

    id: str
    pid: int
    started_at: str
    restart_count: int
    status: str
    health: str | None


def container(service: str) -> Container:
    (cid,) = compose("ps", "--all", "-q", service).split()
    state: dict[str, Any] = json.loads(docker("inspect", cid))[0]
    return Container(
        cid,
        state["State"]["Pid"],
        state["State"]["StartedAt"],
        state["RestartCount"],
        state["State"]["Status"],
        (state["State"].get("Health") or {}).get("Status"),
    )


def crash(service: str) -> Container:
    """SIGKILL the container's main process from the host, as a crash would end it.

    `docker kill` would count as a manual stop, which no restart policy undoes; a process that
    dies by itself is restarted by the policy (`restart: unless-stopped`).
    """
    before = container(service)
    os.kill(before.pid, 9)
    return before


def wait_until(check: Callable[[], bool], what: str, timeout: float = 90) -> float:
    """Poll `check` (an HTTP error counts as "not yet") until true; return the seconds it took."""

    def settled() -> bool:
        try:
            return check()
        except httpx.HTTPError:
            return False

    start = time.monotonic()
    procs.wait_until(settled, timeout=timeout, what=what, interval=0.25)
    return time.monotonic() - start


@dataclass
class ComposeStack:
    project: str
    basket_url: str
    catalog_url: str

    def client(self, user: str, *, admin: bool = False, service: str = "basket") -> httpx.Client:
        token = mint_token(os.environ.get("JWT_SECRET", DEMO_JWT_SECRET), user, admin=admin)
        base = self.basket_url if service == "basket" else self.catalog_url
        return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10)

    def basket_answers(self) -> bool:
        return httpx.get(f"{self.basket_url}/readyz", timeout=2).status_code == 200


@pytest.fixture(scope="session")
def compose_stack() -> ComposeStack:
    return ComposeStack(
        os.environ["E2E_COMPOSE_PROJECT"],
        os.environ["E2E_BASKET_URL"],
        os.environ["E2E_CATALOG_URL"],
    )
