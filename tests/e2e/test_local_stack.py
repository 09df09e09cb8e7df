"""The README's run command: `make run` (devstack up) starts everything, Ctrl-C stops everything,
and the next run finds the baskets where it left them."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from devstack.procs import port_is_open, wait_until
from devstack.stack import DEMO_JWT_SECRET, REPO_ROOT
from devstack.testkit import unique_user
from eshop_common.auth import mint_token

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("E2E_BASKET_URL")), reason="drives the local stack, not a compose stack"
)

URL_LINE = re.compile(r"^\s+(?P<app>[a-z-]+)\s+(?P<url>http://\S+)/docs\s+sidecar (?P<dapr>\S+)$")


def run_stack(state_dir: Path, daprd_path: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        ["uv", "run", "--no-sync", "devstack", "up", "--free-ports", "--state-dir", str(state_dir)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a terminal's Ctrl-C reaches the whole foreground group
    )
    urls: dict[str, str] = {}
    seen: list[str] = []
    deadline = time.monotonic() + 180
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if match := URL_LINE.match(line.rstrip("\n")):
            urls[match["app"]] = match["url"]
            urls[f"{match['app']}-dapr"] = match["dapr"]
        if "export TOKEN=" in line or time.monotonic() > deadline:
            break
    assert {"catalog-api", "basket-api"} <= set(urls), (
        "the stack never said it was ready:\n" + "".join(seen[-40:])
    )
    return proc, urls


def ctrl_c(proc: subprocess.Popen[str]) -> int:
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.stdout is not None
    proc.stdout.read()  # keep draining so the pipe never blocks the shutdown
    return proc.wait(timeout=90)


def leftover_processes(state_dir: Path) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in ps.splitlines() if str(state_dir) in line]


def test_the_run_command_stops_cleanly_on_ctrl_c_and_a_second_run_keeps_the_baskets(
    daprd_path,
):
    state_dir = Path(tempfile.mkdtemp(prefix="eshop-run-"))
    buyer = unique_user()
    headers = {"Authorization": f"Bearer {mint_token(DEMO_JWT_SECRET, buyer)}"}
    try:
        proc, urls = run_stack(state_dir, daprd_path)
        try:
            product = httpx.get(f"{urls['catalog-api']}/api/catalog/items").json()["items"][0]
            httpx.post(
                f"{urls['basket-api']}/api/basket/items",
                json={"productId": product["id"], "quantity": 3},
                headers=headers,
            ).raise_for_status()
            before = httpx.get(f"{urls['basket-api']}/api/basket", headers=headers).json()
        finally:
            assert ctrl_c(proc) == 0

        ports = [int(u.rsplit(":", 1)[1]) for u in urls.values()]
        assert not [p for p in ports if port_is_open(p)], "a service still listens after Ctrl-C"
        assert leftover_processes(state_dir) == []

        proc, urls = run_stack(state_dir, daprd_path)
        try:
            after = httpx.get(f"{urls['basket-api']}/api/basket", headers=headers).json()
        finally:
            assert ctrl_c(proc) == 0
        assert after == before
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def process_with_args(*args: str) -> int:
    """The pid of the one process whose command line holds `args` in a row."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(argv[i : i + len(args)] == list(args) for i in range(len(argv))):
            found.append(int(cmdline.parent.name))
    assert len(found) == 1, f"{args}: {found}"
    return found[0]


def test_a_sidecar_that_crashes_under_the_run_command_is_started_again(daprd_path):
    # As compose's `restart: unless-stopped` does for the containers (tests/compose_stack).
    state_dir = Path(tempfile.mkdtemp(prefix="eshop-run-"))
    headers = {"Authorization": f"Bearer {mint_token(DEMO_JWT_SECRET, unique_user())}"}
    try:
        proc, urls = run_stack(state_dir, daprd_path)
        output: list[str] = []
        assert proc.stdout is not None
        drain = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
        drain.start()
        try:
            port = urls["basket-api-dapr"].rsplit(":", 1)[1]
            os.kill(process_with_args("--dapr-http-port", port), signal.SIGKILL)

            def basket_answers() -> bool:
                url = f"{urls['basket-api']}/api/basket"
                try:
                    return httpx.get(url, headers=headers, timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(basket_answers, timeout=60, what="the basket through a new sidecar")
            assert proc.poll() is None, "the run ended when the sidecar crashed"
            assert any("basket-api-dapr (exit code -9) exited; started it again" in line
                       for line in output)  # fmt: skip
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            assert proc.wait(timeout=90) == 0
        assert leftover_processes(state_dir) == []
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
