"""The container demo, run for real by `make compose-test` after the e2e and browser suites:
its logs, restarts and crashes, the README's compose commands, and volumes that outlive `down`.
The tests run in file order: the last one takes the stack down and up again."""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from devstack.stack import REPO_ROOT
from devstack.testkit import unique_user

from .conftest import ComposeStack, compose, container, crash, wait_until

APPS = ("catalog-api", "basket-api", "webshop")
# daprd logs `level=error`; a Python service's unhandled error shows as a traceback.
ERROR_LINE = re.compile(r"level=error|Traceback \(most recent call last\)")


def test_every_service_is_up_and_each_app_healthy(compose_stack: ComposeStack) -> None:
    for app in APPS:
        assert container(app).health == "healthy", app
        assert container(f"{app}-dapr").status == "running"
        assert container(f"{app}-pod").status == "running"
    assert container("catalog-db-init").status == "exited"


def test_a_healthy_demo_logs_no_errors(compose_stack: ComposeStack) -> None:
    # The e2e and browser suites have run against the stack for minutes by now, longer than the
    # 60 s after which a sidecar with an actor state store and no actors used to log an error.
    logs = compose("logs", "--no-color", "--no-log-prefix", *APPS, *(f"{a}-dapr" for a in APPS))
    errors = [line for line in logs.splitlines() if ERROR_LINE.search(line)]
    assert errors == []


def test_restarting_redis_keeps_every_acknowledged_basket_write(
    compose_stack: ComposeStack,
) -> None:
    buyers = [unique_user("redis-restart") for _ in range(20)]
    for quantity, buyer in enumerate(buyers, start=1):
        with compose_stack.client(buyer) as api:
            resp = api.post("/api/basket/items", json={"productId": 1, "quantity": quantity})
            assert resp.status_code in (200, 201), resp.text
    compose("restart", "redis")
    wait_until(compose_stack.basket_answers, "the basket answering after the Redis restart")
    for quantity, buyer in enumerate(buyers, start=1):
        with compose_stack.client(buyer) as api:
            items = api.get("/api/basket").json()["items"]
            assert [(i["productId"], i["quantity"]) for i in items] == [(1, quantity)], buyer


@pytest.mark.parametrize(
    ("crashing", "other"), [("basket-api", "basket-api-dapr"), ("basket-api-dapr", "basket-api")]
)
def test_a_crashed_app_or_sidecar_is_restarted_by_its_policy_and_the_other_keeps_running(
    compose_stack: ComposeStack, crashing: str, other: str
) -> None:
    buyer = unique_user("crash")
    with compose_stack.client(buyer) as api:
        assert api.post("/api/basket/items", json={"productId": 2, "quantity": 3}).status_code < 300
    untouched = container(other)
    before = crash(crashing)
    took = wait_until(lambda: container(crashing).restart_count > before.restart_count,
                      f"the restart policy restarting {crashing}")  # fmt: skip

    def basket_read() -> bool:
        with compose_stack.client(buyer) as api:
            resp = api.get("/api/basket")  # a 503 problem while it comes back
            return resp.status_code == 200 and resp.json()["items"][0]["quantity"] == 3

    took += wait_until(basket_read, f"a basket read after {crashing} came back")
    print(f"{crashing} crashed: the basket answered again after {took:.1f}s")
    # The other was never touched: the namespace they share (basket-api-pod) outlived the crash.
    assert container(other).started_at == untouched.started_at


def test_a_crashed_pod_takes_its_app_and_sidecar_along_so_none_is_left_stranded(
    compose_stack: ComposeStack,
) -> None:
    buyer = unique_user("pod-crash")
    with compose_stack.client(buyer) as api:
        assert api.post("/api/basket/items", json={"productId": 4, "quantity": 2}).status_code < 300
    before = {name: container(name) for name in ("basket-api", "basket-api-dapr")}
    crash("basket-api-pod")

    def basket_read() -> bool:
        with compose_stack.client(buyer) as api:
            resp = api.get("/api/basket")  # a 503 problem while it comes back
            return resp.status_code == 200 and resp.json()["items"][0]["quantity"] == 2

    # The kernel ended both with the pod's process namespace: neither lives on in the old network
    # namespace. The engine restarts each by its policy, but gives up on one whose first restart
    # comes before the pod is back (it cannot join a stopped container's namespaces); then it is
    # shown as exited, and `docker compose up` (the README's recovery) starts it.
    def ended(name: str) -> bool:
        now = container(name)
        return now.started_at != before[name].started_at or now.status == "exited"

    for name in before:
        wait_until(lambda name=name: ended(name), f"{name} ending with its pod")
    compose("up", "--wait")
    took = wait_until(basket_read, "a basket read through the restarted pod")
    print(f"basket-api-pod crashed: the basket answered again {took:.1f}s after `up --wait`")


def readme_compose_commands() -> list[str]:
    """The `sh` blocks of the README's "With Docker" section, line by line."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## With Docker", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_the_readmes_compose_commands_work_as_written(compose_stack: ComposeStack) -> None:
    commands = readme_compose_commands()
    assert any(c.startswith("docker compose up") for c in commands)
    assert any("--profile debug" in c for c in commands)
    script = "set -euo pipefail\n" + "\n".join(commands)
    result = subprocess.run(["bash", "-x", "-c", script], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    # What the README says each command shows.
    assert '"items"' in result.stdout  # the catalog page
    assert '"productId":1' in result.stdout.replace(" ", "")  # alice's basket
    assert "basket-api||alice" in result.stdout or "data" in result.stdout  # Redis, debug port
    assert "count" in result.stdout  # PostgreSQL, debug port


def test_down_then_up_keeps_catalog_edits_and_baskets(compose_stack: ComposeStack) -> None:
    compose("up", "--wait")
    buyer = unique_user("volumes")
    with compose_stack.client("volumes-admin", admin=True, service="catalog") as admin:
        read = admin.get("/api/catalog/items/5")
        item = read.json()
        writable = ("name", "price", "pictureFileName", "catalogBrandId", "catalogTypeId",
                    "availableStock", "restockThreshold", "maxStockThreshold")  # fmt: skip
        edited = {key: item[key] for key in writable} | {"description": f"edited {buyer}"}
        replaced = admin.put(
            "/api/catalog/items/5", json=edited, headers={"If-Match": read.headers["etag"]}
        )
        assert replaced.status_code == 200, replaced.text
    with compose_stack.client(buyer) as api:
        assert api.post("/api/basket/items", json={"productId": 5, "quantity": 4}).status_code < 300
    compose("down")
    started = time.monotonic()
    compose("up", "--wait")
    print(f"down, then up --wait: healthy after {time.monotonic() - started:.1f}s")
    with compose_stack.client("volumes-admin", admin=True, service="catalog") as admin:
        assert admin.get("/api/catalog/items/5").json()["description"] == f"edited {buyer}"
    with compose_stack.client(buyer) as api:
        items = api.get("/api/basket").json()["items"]
        assert [(i["productId"], i["quantity"]) for i in items] == [(5, 4)]
