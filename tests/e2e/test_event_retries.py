"""An event that fails for a while is retried long enough to ride out a database stall or
restart, is handled once, and is never in flight twice.

The catalog's database is made to fail the way production does: a row held by another
transaction past the catalog's statement timeout, and a PostgreSQL restart. Each checkout must be
reserved exactly once, none may reach the dead-letter topic, and Redis must hand each message out
once (its consumer group's delivery counter, XPENDING, stays at 1). The control runs the same
stall with the sample's former settings (processingTimeout 15 s, five retries) and shows both
failures those had: a second copy handed out while the first was still being retried, and the
checkout dead-lettered while the row was still locked.

The stack here is the module's own: its PostgreSQL is restarted, and its Redis holds consumer
groups no other stack shares.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
import yaml

from devstack.stack import DEMO_JWT_SECRET, REPO_ROOT, Stack
from devstack.testkit import (
    SHIPPING,
    eventually,
    new_product,
    published_events,
    stock_of,
    unique_user,
)
from eshop_common.auth import mint_token

# Longer than the former retries lasted with the catalog's 5 s statement timeout (six attempts
# of 5 s and about 7 s of back-off: 37 s) and than the former processingTimeout (15 s).
STALL_SECONDS = 50
# A PostgreSQL restart; EVENT_OUTAGE_SECONDS=120 measures the two minutes docs/08 names.
OUTAGE_SECONDS = int(os.environ.get("EVENT_OUTAGE_SECONDS", "30"))


@pytest.fixture(scope="module")
def own_stack(daprd_path: Path) -> Iterator[Stack]:
    state_dir = Path(tempfile.mkdtemp(prefix="eshop-retries-"))
    stack = Stack(state_dir=state_dir, daprd=daprd_path, free_ports=True, durable=False)
    try:
        stack.start_infra()
        stack.init_catalog_database()
        for name in ("catalog-api", "basket-api"):
            stack.start_sidecar(name)
            stack.start_app(name)
        for name in ("catalog-api", "basket-api"):
            stack.wait_ready(name)
        stack.wait_invocable("basket-api", "catalog-api")
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(state_dir, ignore_errors=True)


class InFlight:
    """How many times Redis has handed out each checkout message to the catalog, sampled in
    the background: the consumer group's delivery counter (XPENDING) of each pending message.
    It is 1 while the one copy is being retried by the sidecar, and 2 once Redis has claimed
    the message again for a second copy."""

    def __init__(self, stack: Stack, topic: str = "user-checkout-accepted") -> None:
        assert stack.redis_url is not None
        self._redis = redis.Redis.from_url(stack.redis_url, decode_responses=True)
        self._topic = topic
        self._event_ids: dict[str, str] = {}
        self.most: dict[str, int] = {}
        self.pending: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> InFlight:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _event_id(self, message_id: str) -> str:
        if message_id not in self._event_ids:
            [(_, fields)] = self._redis.xrange(self._topic, message_id, message_id)
            self._event_ids[message_id] = json.loads(fields["data"])["id"]
        return self._event_ids[message_id]

    def sample(self) -> None:
        pending = self._redis.xpending_range(self._topic, "catalog-api", "-", "+", 1000)
        now = set()
        for entry in pending:
            event_id = self._event_id(entry["message_id"])
            now.add(event_id)
            self.most[event_id] = max(self.most.get(event_id, 0), entry["times_delivered"])
        self.pending = now

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.sample()


def shopper(stack: Stack, product_id: int, quantity: int) -> httpx.Client:
    token = mint_token(DEMO_JWT_SECRET, unique_user())
    client = httpx.Client(
        base_url=stack.url("basket-api"), headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    added = client.post("/api/basket/items", json={"productId": product_id, "quantity": quantity})
    assert added.status_code == 200, added.text
    return client


def check_out(client: httpx.Client) -> str:
    resp = client.post("/api/basket/checkout", json={"shipping": SHIPPING})
    assert resp.status_code == 202, resp.text
    request_id: str = resp.json()["requestId"]
    return request_id


def checkout_status(client: httpx.Client, request_id: str) -> str:
    status: str = client.get(f"/api/basket/checkouts/{request_id}").json()["status"]
    return status


@contextmanager
def row_locked(stack: Stack, item_id: int) -> Iterator[None]:
    """Another transaction holds the item's row, as a long report or a stuck session would."""
    assert stack.database_url is not None
    url = stack.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        conn.execute("SELECT id FROM catalog_item WHERE id = %s FOR UPDATE", (item_id,))
        try:
            yield
        finally:
            conn.rollback()


def dead_letters_of(stack: Stack, event_id: str) -> list[dict[str, Any]]:
    token = mint_token(DEMO_JWT_SECRET, "operator", admin=True)
    resp = httpx.get(
        f"{stack.url('catalog-api')}/api/catalog/admin/dead-letters",
        params={"eventId": event_id},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status_code == 200, resp.text
    return [x for x in resp.json()["items"] if x["deliveries"] > 0]


def retries_logged(stack: Stack, event_id: str) -> int:
    """How many deliveries of the checkout the catalog answered RETRY (one log line each)."""
    return stack.log_text("catalog-api").count(f"checkout {event_id}: database unavailable")


def reservations(stack: Stack, event_ids: list[str]) -> int:
    assert stack.database_url is not None
    url = stack.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM processed_event "
            "WHERE event_id = ANY(%s) AND outcome = 'reserved'",
            (event_ids,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_row_locked_past_the_former_retries_is_reserved_once_when_it_is_released(
    own_stack: Stack,
):
    item = new_product(own_stack, stock=10)
    buyer = shopper(own_stack, item["id"], 2)

    with InFlight(own_stack) as in_flight, row_locked(own_stack, item["id"]):
        request_id = check_out(buyer)
        time.sleep(STALL_SECONDS)
        assert stock_of(own_stack, item["id"]) == 10, "reserved while the row was locked?"
        released = time.monotonic()
    eventually(lambda: stock_of(own_stack, item["id"]) == 8, timeout=40, what="the reservation")
    took = time.monotonic() - released
    eventually(lambda: checkout_status(buyer, request_id) == "reserved", what="StockReserved")
    time.sleep(2)

    attempts = retries_logged(own_stack, request_id) + 1
    print(
        f"\nrow locked {STALL_SECONDS}s: {attempts} deliveries by the sidecar; reserved "
        f"{took:.1f}s after the release; Redis handed the message out "
        f"{in_flight.most[request_id]} time(s)"
    )
    assert stock_of(own_stack, item["id"]) == 8
    assert reservations(own_stack, [request_id]) == 1
    assert in_flight.most[request_id] == 1, "a second copy was in flight"
    assert attempts > 6, "the former policy's six attempts would have sufficed"
    assert dead_letters_of(own_stack, request_id) == []
    assert [e for e in published_events(own_stack, "deadletter") if e["id"] == request_id] == []


@pytest.mark.timeout(OUTAGE_SECONDS + 240)
def test_a_database_restart_during_checkouts_loses_none_and_reserves_each_once(
    own_stack: Stack,
):
    assert own_stack.postgres is not None
    item = new_product(own_stack, stock=1000)
    buyers = [shopper(own_stack, item["id"], n % 3 + 1) for n in range(OUTAGE_SECONDS // 2 + 6)]
    quantity = sum(n % 3 + 1 for n in range(len(buyers)))
    request_ids: list[str] = []
    during: list[str] = []
    down = threading.Event()

    def check_out_all() -> None:
        for buyer in buyers:
            request_ids.append(check_out(buyer))
            if down.is_set():
                during.append(request_ids[-1])
            time.sleep(2)

    with InFlight(own_stack) as in_flight:
        checkouts = threading.Thread(target=check_out_all)
        checkouts.start()
        time.sleep(3)
        own_stack.postgres.stop()
        down.set()
        time.sleep(OUTAGE_SECONDS)
        down.clear()
        own_stack.postgres.start()
        back = time.monotonic()
        checkouts.join()
        eventually(
            lambda: stock_of(own_stack, item["id"]) == 1000 - quantity,
            timeout=60,
            what="every checkout reserved",
        )
        took = time.monotonic() - back
        for buyer, request_id in zip(buyers, request_ids, strict=True):
            eventually(lambda b=buyer, r=request_id: checkout_status(b, r) == "reserved")
        time.sleep(2)

    attempts = {r: retries_logged(own_stack, r) + 1 for r in request_ids}
    print(
        f"\nPostgreSQL down {OUTAGE_SECONDS}s during {len(request_ids)} checkouts "
        f"({len(during)} of them while it was down): all reserved {took:.1f}s after it was back; "
        f"at most {max(attempts.values())} deliveries of one event; Redis handed a message out "
        f"at most {max(in_flight.most.values())} time(s)"
    )
    assert during, "no checkout happened while the database was down"
    assert stock_of(own_stack, item["id"]) == 1000 - quantity
    assert reservations(own_stack, request_ids) == len(request_ids)
    # (A checkout handled within one sample's time was never seen pending: handed out once.)
    assert all(in_flight.most.get(r, 1) == 1 for r in request_ids), in_flight.most
    assert all(dead_letters_of(own_stack, r) == [] for r in request_ids)


def former_settings(target: Path) -> Path:
    """components/ with the retry and redelivery settings the sample had before."""
    target.mkdir(parents=True, exist_ok=True)
    for path in (REPO_ROOT / "components").glob("*.yaml"):
        shutil.copy(path, target / path.name)
    pubsub = yaml.safe_load((target / "pubsub.yaml").read_text())
    values = {"processingTimeout": "15s", "redeliverInterval": "10s"}
    for item in pubsub["spec"]["metadata"]:
        item["value"] = values.pop(item["name"], item.get("value"))
    assert not values, f"pubsub.yaml no longer sets {values}"
    (target / "pubsub.yaml").write_text(yaml.safe_dump(pubsub))
    resiliency = yaml.safe_load((target / "resiliency.yaml").read_text())
    resiliency["spec"]["policies"]["retries"]["eventRetry"] = {
        "policy": "exponential", "maxInterval": "5s", "maxRetries": 5,
    }  # fmt: skip
    (target / "resiliency.yaml").write_text(yaml.safe_dump(resiliency))
    return target


@contextmanager
def catalog_sidecar_reading(stack: Stack, resources: Path) -> Iterator[None]:
    def restart(with_resources: Path | None) -> None:
        stack.stop_process("catalog-api-dapr")
        stack.start_sidecar("catalog-api", with_resources)
        stack.wait_invocable("basket-api", "catalog-api")

    restart(resources)
    try:
        yield
    finally:
        restart(None)


def test_the_control_the_former_settings_put_a_second_copy_in_flight_and_dead_letter_it(
    own_stack: Stack,
):
    item = new_product(own_stack, stock=10)
    buyer = shopper(own_stack, item["id"], 2)
    resources = former_settings(own_stack.state_dir / "former-components")

    with catalog_sidecar_reading(own_stack, resources), InFlight(own_stack) as in_flight:
        with row_locked(own_stack, item["id"]):
            started = time.monotonic()
            request_id = check_out(buyer)
            eventually(
                lambda: in_flight.most.get(request_id, 0) >= 2,
                timeout=STALL_SECONDS,
                what="a second copy in flight",
            )
            second_copy = time.monotonic() - started
            eventually(
                lambda: dead_letters_of(own_stack, request_id),
                timeout=STALL_SECONDS,
                what="a dead letter",
            )
            dead = time.monotonic() - started
            assert stock_of(own_stack, item["id"]) == 10
        # The copy still being retried takes the row now; it ends before the sidecar does.
        eventually(lambda: request_id not in in_flight.pending, timeout=40)
    print(
        f"\nformer settings, row locked: a second copy in flight after {second_copy:.0f}s, "
        f"a dead letter after {dead:.0f}s"
    )
