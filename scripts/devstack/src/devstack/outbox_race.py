"""Why checkout does not use Dapr's transactional outbox: the Redis case, as an experiment.

    uv run devstack outbox-race --redis localhost:6380

Starts a sidecar of its own (the pinned daprd, no app) whose Redis state store has the outbox
switched on (`outboxPublishPubsub`), saves one key, then sends several state transactions at once,
each upserting that key under the same ETag with first-write concurrency: the way a checkout would
use the outbox to "empty the basket and publish the order" once per basket version. Exactly one
should commit and publish. It prints what the store and the pub/sub made of it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from devstack.procs import die_with_parent, free_port, wait_until
from devstack.stack import install_daprd

COMPONENTS = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: outboxstore
spec:
  type: state.redis
  version: v1
  metadata:
    - name: redisHost
      value: "{redis}"
    - name: outboxPublishPubsub
      value: outboxpubsub
    - name: outboxPublishTopic
      value: "{topic}"
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: outboxpubsub
spec:
  type: pubsub.redis
  version: v1
  metadata:
    - name: redisHost
      value: "{redis}"
"""


@dataclass(frozen=True)
class OutboxRace:
    racers: int
    committed: list[str]  # the values of the transactions the sidecar answered 204 to
    events: list[str]  # the values the outbox published on the topic
    final_value: str | None


async def _race(sidecar: str, key: str, etag: str, racers: int) -> list[int]:
    async with httpx.AsyncClient(base_url=sidecar, timeout=30) as http:

        async def transaction(i: int) -> int:
            op = {
                "operation": "upsert",
                "request": {
                    "key": key, "value": f"racer-{i}", "etag": etag,
                    "options": {"concurrency": "first-write"},
                },
            }  # fmt: skip
            resp = await http.post("/v1.0/state/outboxstore/transaction", json={"operations": [op]})
            return resp.status_code

        return list(await asyncio.gather(*(transaction(i) for i in range(racers))))


def run(redis_host: str, racers: int = 8) -> OutboxRace:
    """`racers` outbox transactions on one key under one ETag, through a fresh sidecar."""
    base = Path(tempfile.mkdtemp(prefix="eshop-outbox-race-"))
    topic = f"outbox-race-{uuid.uuid4().hex[:8]}"
    (base / "components.yaml").write_text(COMPONENTS.format(redis=redis_host, topic=topic))
    http_port = free_port()
    argv = [
        str(install_daprd()), "--app-id", "outbox-race", "--resources-path", str(base),
        "--dapr-http-port", str(http_port), "--dapr-grpc-port", str(free_port()),
        "--dapr-internal-grpc-port", str(free_port()), "--dapr-listen-addresses", "127.0.0.1",
        "--enable-metrics=false", "--log-level", "warn",
    ]  # fmt: skip
    log = (base / "daprd.log").open("wb")
    env = {**os.environ, "DAPR_HOST_IP": "127.0.0.1"}
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent
    )
    sidecar = f"http://127.0.0.1:{http_port}"
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"{sidecar}/v1.0/healthz", timeout=1).status_code == 204
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout=60, what="the outbox experiment's sidecar")
        key = f"order-{uuid.uuid4().hex[:8]}"
        saved = httpx.post(
            f"{sidecar}/v1.0/state/outboxstore", json=[{"key": key, "value": "basket"}]
        )
        saved.raise_for_status()
        etag = httpx.get(f"{sidecar}/v1.0/state/outboxstore/{key}").headers["etag"]
        statuses = asyncio.run(_race(sidecar, key, etag, racers))
        time.sleep(3)  # the outbox publishes after the transaction, through an internal topic
        host, _, port = redis_host.partition(":")
        store = redis.Redis(host=host, port=int(port or 6379), decode_responses=True)
        entries: list[tuple[str, dict[str, str]]] = store.xrange(topic)  # type: ignore[assignment]
        events = [json.loads(fields["data"]).get("data") for _, fields in entries]
        final = httpx.get(f"{sidecar}/v1.0/state/outboxstore/{key}")
        value = final.json() if final.status_code == 200 else None
        committed = [f"racer-{i}" for i, status in enumerate(statuses) if status == 204]
        return OutboxRace(racers, committed, events, value)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def report(redis_host: str, racers: int) -> None:
    race = run(redis_host, racers)
    print(
        textwrap.dedent(f"""\
        {race.racers} outbox transactions at once, each upserting one key under the same ETag
        answered 204 (committed): {len(race.committed)} {race.committed}
        events published: {len(race.events)} {sorted(map(str, race.events))}
        value stored: {race.final_value}""")
    )
