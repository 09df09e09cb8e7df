"""The same state API calls on Redis and on PostgreSQL, through the pinned daprd: an experiment.

    uv run devstack store-semantics --redis localhost:6380 \\
        --postgres postgresql://postgres@localhost:5433/postgres [--group etags ...]

Starts sidecars of its own (the pinned daprd, app id `basket-api`, no app). For each store one
loads the basket's component file (`components/statestore.yaml`, or
`components/postgresql/statestore.yaml`) with the sample's `resiliency.yaml`; the groups about a
store that stops also use one with no resiliency policy. Each sidecar reaches its store through a
TCP relay the experiment can cut, which is what a sidecar sees when the store stops. Then the
same calls go through both stores' sidecars, and it prints one row per behaviour: the status each
answered, what the store holds afterwards where that matters, and `retried` when the sidecar's
retry policy sent the call again (daprd logs "Retrying in" once for a call it retries). Every row
uses keys of its own; the PostgreSQL store works in databases the experiment creates and drops,
and the Redis keys are deleted at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from devstack.procs import die_with_parent, free_port, wait_until
from devstack.stack import DEMO_DAPR_API_TOKEN, REPO_ROOT, install_daprd

COMPONENTS = REPO_ROOT / "components"
STORE_FILES = {
    "redis": COMPONENTS / "statestore.yaml",
    "postgresql": COMPONENTS / "postgresql" / "statestore.yaml",
}
RETRY_LINE = "Retrying in"


class Relay:
    """A TCP relay to one server. `cut()` closes every open connection and refuses new ones:
    from the sidecar's side, the store has stopped."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self._listener.close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()


@dataclass
class Sidecar:
    """A daprd with one store's statestore component, and a client for its state API."""

    store: str
    base: Path
    relay: Relay
    env: dict[str, str]
    daprd: Path
    resiliency: bool = True
    http_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    _seen_retries: int = 0
    read_before_cut: dict[str, str | None] = field(default_factory=dict)  # key -> its ETag

    @property
    def name(self) -> str:
        return f"{self.store}-{'resiliency' if self.resiliency else 'no-policy'}"

    @property
    def log_path(self) -> Path:
        return self.base / f"daprd-{self.name}.log"

    def start(self) -> None:
        resources = self.base / f"resources-{self.name}"
        resources.mkdir()
        shutil.copy(STORE_FILES[self.store], resources / "statestore.yaml")
        if self.resiliency:
            shutil.copy(COMPONENTS / "resiliency.yaml", resources / "resiliency.yaml")
        argv = [
            str(self.daprd), "--app-id", "basket-api", "--resources-path", str(resources),
            "--config", str(COMPONENTS / "config" / "local.yaml"),
            "--dapr-http-port", str(self.http_port), "--dapr-grpc-port", str(free_port()),
            "--dapr-internal-grpc-port", str(free_port()), "--dapr-listen-addresses", "127.0.0.1",
            "--enable-metrics=false", "--log-level", "warn",
        ]  # fmt: skip
        env = {
            **self.env,
            "DAPR_API_TOKEN": DEMO_DAPR_API_TOKEN,
            "DAPR_HOST_IP": "127.0.0.1",
            "NAME_RESOLUTION_DB": str(self.base / f"names-{self.name}.db"),
        }
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent
            )
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.http_port}/v1.0/state/statestore",
            headers={"dapr-api-token": DEMO_DAPR_API_TOKEN},
            timeout=30,
        )

        def healthy() -> bool:
            try:
                url = f"http://127.0.0.1:{self.http_port}/v1.0/healthz"
                return httpx.get(url, timeout=1).status_code == 204
            except httpx.HTTPError:
                return False

        try:
            wait_until(healthy, timeout=60, what=f"the {self.name} experiment sidecar")
        except TimeoutError as exc:
            tail = self.log_path.read_text(errors="replace").splitlines()[-15:]
            raise TimeoutError("\n".join([str(exc), *tail])) from None

    def stop(self) -> None:
        if self.proc is not None:
            self.http.close()
            self.proc.terminate()
            self.proc.wait(timeout=15)

    # -- the state API: each call answers its status and whether the sidecar retried it ---

    def _retried(self) -> bool:
        """Whether the sidecar retried the last call: daprd logs one line per retried call
        (dapr/kit retry.NotifyRecoverWithData notifies once), however many retries it took."""
        seen = self.log_path.read_text(errors="replace").count(RETRY_LINE)
        new, self._seen_retries = seen - self._seen_retries, seen
        return new > 0

    def save(
        self, key: str, value: Any, *, etag: str | None = None, concurrency: str | None = None
    ) -> Outcome:
        item: dict[str, Any] = {"key": key, "value": value}
        if etag is not None:
            item["etag"] = etag
        if concurrency is not None:
            item["options"] = {"concurrency": concurrency}
        return self._call("POST", "", json=[item])

    def bulk_save(self, items: list[dict[str, Any]]) -> Outcome:
        return self._call("POST", "", json=items)

    def transaction(self, operations: list[dict[str, Any]]) -> Outcome:
        return self._call("POST", "/transaction", json={"operations": operations})

    def delete(self, key: str, *, if_match: str | None = None) -> Outcome:
        headers = {"If-Match": if_match} if if_match is not None else {}
        return self._call("DELETE", f"/{key}", headers=headers)

    def read(self, key: str) -> tuple[Outcome, str | None]:
        resp = self.http.get(f"/{key}")
        return Outcome(resp.status_code, self._retried()), resp.headers.get("etag")

    def etag(self, key: str) -> str | None:
        return self.read(key)[1]

    def _call(self, method: str, path: str, **kwargs: Any) -> Outcome:
        resp = self.http.request(method, path, **kwargs)
        return Outcome(resp.status_code, self._retried())


@dataclass(frozen=True)
class Outcome:
    status: int
    retried: bool

    def __str__(self) -> str:
        return f"{self.status}, retried" if self.retried else str(self.status)


# -- the behaviours: each gets a key of its own and says what happened, in a few words -----

Probe = Callable[[Sidecar, str], str]


def _stored(s: Sidecar, key: str) -> str:
    etag = s.etag(key)
    if etag is None:
        return "nothing stored"
    return f"ETag {etag}" if etag.isdigit() else "ETag <uuid>"


def etag_on_a_missing_key(s: Sidecar, k: str) -> str:
    outcome = s.save(k, "v", etag="7", concurrency="first-write")
    return f"{outcome}, {_stored(s, k)}" if outcome.status == 204 else str(outcome)


def first_write_over_first_write(s: Sidecar, k: str) -> str:
    s.save(k, "v1", concurrency="first-write")
    return str(s.save(k, "v2", concurrency="first-write"))


def first_write_over_last_write(s: Sidecar, k: str) -> str:
    s.save(k, "v1", concurrency="last-write")
    return str(s.save(k, "v2", concurrency="first-write"))


def last_write_over_first_write(s: Sidecar, k: str) -> str:
    s.save(k, "v1", concurrency="first-write")
    return str(s.save(k, "v2", concurrency="last-write"))


def stale_etag_without_option(s: Sidecar, k: str) -> str:
    s.save(k, "v1")
    stale = s.etag(k)
    s.save(k, "v2")
    return str(s.save(k, "v3", etag=stale))


def stale_etag_with_last_write(s: Sidecar, k: str) -> str:
    s.save(k, "v1")
    stale = s.etag(k)
    s.save(k, "v2")
    return str(s.save(k, "v3", etag=stale, concurrency="last-write"))


def stale_etag_with_first_write(s: Sidecar, k: str) -> str:
    s.save(k, "v1", concurrency="first-write")
    stale = s.etag(k)
    s.save(k, "v2", etag=stale, concurrency="first-write")
    return str(s.save(k, "v3", etag=stale, concurrency="first-write"))


def etag_that_is_no_version(s: Sidecar, k: str) -> str:
    s.save(k, "v1")
    return str(s.save(k, "v2", etag="not-a-version", concurrency="first-write"))


def delete_missing_key_with_if_match(s: Sidecar, k: str) -> str:
    return str(s.delete(k, if_match="7"))


def delete_with_stale_if_match(s: Sidecar, k: str) -> str:
    s.save(k, "v1")
    stale = s.etag(k)
    s.save(k, "v2")
    return f"{s.delete(k, if_match=stale)}, {'kept' if s.etag(k) else 'deleted'}"


def _recreated(s: Sidecar, k: str) -> str | None:
    """Save `k`, delete it, save it again; the ETag it had before the delete."""
    s.save(k, "v1", concurrency="first-write")
    before = s.etag(k)
    s.delete(k)
    s.save(k, "v2", concurrency="first-write")
    return before


def etag_after_a_delete(s: Sidecar, k: str) -> str:
    before = _recreated(s, k)
    return "the same as before" if s.etag(k) == before else "a new one"


def save_under_etag_from_before_a_delete(s: Sidecar, k: str) -> str:
    before = _recreated(s, k)
    return str(s.save(k, "v3", etag=before, concurrency="first-write"))


def bulk_save_with_one_stale(s: Sidecar, k: str) -> str:
    s.save(f"{k}-b", "b1")
    stale = s.etag(f"{k}-b")
    s.save(f"{k}-b", "b2")
    outcome = s.bulk_save(
        [{"key": f"{k}-a", "value": "a1"}, {"key": f"{k}-b", "value": "b3", "etag": stale}]
    )
    return f"{outcome}, a: {_stored(s, f'{k}-a')}"


def transaction_with_one_stale(s: Sidecar, k: str) -> str:
    s.save(f"{k}-b", "b1")
    stale = s.etag(f"{k}-b")
    s.save(f"{k}-b", "b2")
    outcome = s.transaction(
        [
            {"operation": "upsert", "request": {"key": f"{k}-a", "value": "a1"}},
            {"operation": "upsert", "request": {"key": f"{k}-b", "value": "b3", "etag": stale}},
        ]
    )
    return f"{outcome}, a: {_stored(s, f'{k}-a')}"


def read_while_down(s: Sidecar, k: str) -> str:
    return str(s.read(k)[0])


def save_while_down(s: Sidecar, k: str) -> str:
    return str(s.save(k, "v2", concurrency="first-write"))


def save_with_etag_while_down(s: Sidecar, k: str) -> str:
    return str(s.save(k, "v2", etag=s.read_before_cut[k], concurrency="first-write"))


def delete_while_down(s: Sidecar, k: str) -> str:
    return str(s.delete(k))


@dataclass(frozen=True)
class Group:
    rows: list[tuple[str, Probe]]
    resiliency: bool = True  # the sidecar loads components/resiliency.yaml
    store_down: bool = False  # the relay to the store is cut before the first row


GROUPS: dict[str, Group] = {
    "etags": Group(
        [
            ("save under an ETag, no such key", etag_on_a_missing_key),
            ("first-write, no ETag, key saved by first-write", first_write_over_first_write),
            ("first-write, no ETag, key saved by last-write", first_write_over_last_write),
            ("last-write, no ETag, key saved by first-write", last_write_over_first_write),
            ("stale ETag, first-write", stale_etag_with_first_write),
            ("stale ETag, no concurrency option", stale_etag_without_option),
            ("stale ETag, last-write", stale_etag_with_last_write),
            ('ETag "not-a-version"', etag_that_is_no_version),
            ("delete, If-Match, no such key", delete_missing_key_with_if_match),
            ("delete, stale If-Match", delete_with_stale_if_match),
            ("deleted, saved again: its ETag", etag_after_a_delete),
            ("... then a save under the ETag from before", save_under_etag_from_before_a_delete),
        ]
    ),
    "several-keys": Group(
        [
            ("bulk save: a; b under a stale ETag", bulk_save_with_one_stale),
            ("transaction: upsert a; b under a stale ETag", transaction_with_one_stale),
        ]
    ),
    "store-down": Group(
        [
            ("store down: read", read_while_down),
            ("store down: save, no ETag", save_while_down),
            ("store down: save under an ETag", save_with_etag_while_down),
            ("store down: delete", delete_while_down),
        ],
        store_down=True,
    ),
    "store-down-no-timeout": Group(
        [
            ("... no sidecar timeout: save, no ETag", save_while_down),
            ("... no sidecar timeout: save under an ETag", save_with_etag_while_down),
            ("... no sidecar timeout: delete", delete_while_down),
        ],
        resiliency=False,
        store_down=True,
    ),
}


def _run_groups(sidecar: Sidecar, groups: list[str], run_id: str) -> dict[str, list[str]]:
    """Each group's results on this sidecar, the groups that cut the store off last."""
    sidecar.start()
    try:
        results: dict[str, list[str]] = {}
        for name in sorted(groups, key=lambda g: GROUPS[g].store_down):
            keys = [f"semantics-{run_id}-{name}-{n}" for n in range(len(GROUPS[name].rows))]
            if GROUPS[name].store_down:
                for key in keys:  # saved while the store is up, with the ETag read back
                    sidecar.save(key, "v1", concurrency="first-write")
                    sidecar.read_before_cut[key] = sidecar.etag(key)
                sidecar.relay.cut()
            results[name] = [
                probe(sidecar, key) for key, (_, probe) in zip(keys, GROUPS[name].rows, strict=True)
            ]
        return results
    finally:
        sidecar.stop()


def run(redis_host: str, postgres_url: str, groups: list[str]) -> list[tuple[str, str, str]]:
    """(behaviour, what Redis did, what PostgreSQL did) for each row of `groups`. Each store
    gets a sidecar with the sample's resiliency policy and, when a group asks for it, one
    without; each sidecar reaches its store through a relay of its own."""
    daprd = install_daprd()
    run_id = uuid.uuid4().hex[:8]
    base = Path(tempfile.mkdtemp(prefix="eshop-store-semantics-"))
    admin = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    databases: list[str] = []
    redis_at = _host_port(redis_host, 6379)
    info = psycopg.conninfo.conninfo_to_dict(admin)
    pg_at = (str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432))

    def new_database() -> str:
        # One per sidecar: two sidecars migrating one fresh database at once can trip each other.
        databases.append(f"store_semantics_{run_id}_{len(databases)}")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{databases[-1]}"')
        return databases[-1]

    def sidecar(store: str, resiliency: bool) -> Sidecar:
        relay = Relay(*(redis_at if store == "redis" else pg_at))
        address = f"127.0.0.1:{relay.port}"
        env = (
            {"REDIS_HOST": address, "REDIS_PASSWORD": ""}
            if store == "redis"
            else {
                "STATE_PG_CONNECTION_STRING": psycopg.conninfo.make_conninfo(
                    admin, host="127.0.0.1", port=str(relay.port), dbname=new_database()
                )
            }
        )
        return Sidecar(store, base, relay, {**os.environ, **env}, daprd, resiliency=resiliency)

    plan = [
        (sidecar(store, resiliency), names)
        for store in STORE_FILES
        for resiliency in (True, False)
        if (names := [g for g in groups if GROUPS[g].resiliency == resiliency])
    ]
    try:
        with ThreadPoolExecutor(len(plan)) as pool:
            done = list(pool.map(lambda job: _run_groups(job[0], job[1], run_id), plan))
    finally:
        for car, _ in plan:
            car.relay.cut()
        store = redis.Redis(host=redis_at[0], port=redis_at[1])
        for key in store.scan_iter(match=f"basket-api||semantics-{run_id}-*"):
            store.delete(key)
        with psycopg.connect(admin, autocommit=True) as conn:
            for database in databases:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        shutil.rmtree(base, ignore_errors=True)
    results = {
        (car.store, name): rows
        for (car, _), by_group in zip(plan, done, strict=True)
        for name, rows in by_group.items()
    }
    return [
        (label, results["redis", name][n], results["postgresql", name][n])
        for name in GROUPS
        if name in groups
        for n, (label, _) in enumerate(GROUPS[name].rows)
    ]


def _host_port(address: str, default_port: int) -> tuple[str, int]:
    host, colon, port = address.removeprefix("redis://").split("/")[0].rpartition(":")
    return (host, int(port)) if colon else (port, default_port)


def report(redis_host: str, postgres_url: str, groups: list[str]) -> None:
    rows = run(redis_host, postgres_url, groups)
    width = max(len(label) for label, _, _ in rows)
    middle = max(len("Redis"), *(len(r) for _, r, _ in rows))
    print(f"{'':{width}}  {'Redis':{middle}}  PostgreSQL")
    for label, on_redis, on_postgres in rows:
        print(f"{label:{width}}  {on_redis:{middle}}  {on_postgres}")
