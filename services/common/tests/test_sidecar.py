"""The shared sidecar client against a real daprd (the local stack's basket sidecar, Redis state
store, Redis pub/sub), and against sidecars that are not there or never answer."""

from __future__ import annotations

import socket
import time
import uuid
from typing import Any, TypeVar

import pytest

from devstack.procs import free_port
from devstack.stack import Stack
from devstack.testkit import run_with
from eshop_common.sidecar import (
    DaprError,
    NotJson,
    Sidecar,
    SidecarSettings,
    SidecarUnavailable,
    StateConflict,
    StateEntry,
)

T = TypeVar("T")
STORE = "statestore"


def key() -> str:
    return f"sidecar-test-{uuid.uuid4().hex[:12]}"


def test_a_state_round_trip_keeps_the_etag_and_refuses_a_stale_one(sidecar: Sidecar) -> None:
    name = key()

    async def use(dapr: Sidecar) -> None:
        assert await dapr.get_state(STORE, name) == StateEntry(None, None)
        await dapr.save_state(
            STORE, name, {"n": 1, "text": "ü"}, concurrency="first-write",
            consistency="strong", metadata={"ttlInSeconds": "60"},
        )  # fmt: skip
        first = await dapr.get_state(STORE, name, consistency="strong")
        assert first.value == {"n": 1, "text": "ü"}
        assert first.etag
        await dapr.save_state(STORE, name, {"n": 2}, etag=first.etag, concurrency="first-write")
        second = await dapr.get_state(STORE, name, consistency="strong")
        assert second.value == {"n": 2}
        assert second.etag != first.etag
        with pytest.raises(StateConflict) as conflict:
            await dapr.save_state(STORE, name, {"n": 3}, etag=first.etag, concurrency="first-write")
        assert conflict.value.status == 409
        assert "ERR_STATE_SAVE" in str(conflict.value)
        with pytest.raises(StateConflict):
            await dapr.delete_state(STORE, name, etag=first.etag, concurrency="first-write")
        await dapr.delete_state(STORE, name, etag=second.etag, concurrency="first-write")
        assert await dapr.get_state(STORE, name) == StateEntry(None, None)

    run_with(sidecar, use)


def test_bulk_get_answers_each_key_and_empty_for_missing_ones(sidecar: Sidecar) -> None:
    names = [key(), key()]
    missing = key()

    async def use(dapr: Sidecar) -> dict[str, StateEntry]:
        for i, name in enumerate(names):
            await dapr.save_state(STORE, name, [i])
        return await dapr.get_bulk_state(STORE, [*names, missing])

    entries = run_with(sidecar, use)
    assert [entries[name].value for name in names] == [[0], [1]]
    assert all(entries[name].etag for name in names)
    assert entries[missing] == StateEntry(None, None)


def test_a_value_that_is_not_json_reads_as_not_json(stack: Stack, sidecar: Sidecar) -> None:
    import redis

    name = key()
    # The Redis state store keeps a key as a hash under "<app id>||<key>".
    redis.Redis.from_url(stack.redis_url).hset(f"basket-api||{name}", mapping={
        "data": "not json", "version": "1",
    })  # fmt: skip
    entry = run_with(sidecar, lambda dapr: dapr.get_state(STORE, name))
    assert isinstance(entry.value, NotJson)
    assert entry.value.raw == b"not json"


def test_publish_is_accepted_and_an_unknown_pubsub_is_a_dapr_error(sidecar: Sidecar) -> None:
    async def use(dapr: Sidecar) -> DaprError:
        await dapr.publish(
            "pubsub", "sidecar-client-test", {"hello": "world"},
            cloudevent={"id": str(uuid.uuid4()), "type": "Test", "source": None},
        )  # fmt: skip
        with pytest.raises(DaprError) as refused:
            await dapr.publish("no-such-pubsub", "t", {})
        return refused.value

    error = run_with(sidecar, use)
    assert error.status == 404
    assert "ERR_PUBSUB_NOT_FOUND" in str(error)


def test_invoke_passes_headers_and_returns_the_apps_answer(sidecar: Sidecar) -> None:
    async def use(dapr: Sidecar) -> list[Any]:
        items = await dapr.invoke("catalog-api", "api/catalog/items/by-ids", query={"ids": "1,2"})
        picture = await dapr.invoke("catalog-api", "api/catalog/items/1/picture")
        again = await dapr.invoke(
            "catalog-api", "api/catalog/items/1/picture",
            headers={"If-None-Match": picture.etag or ""},
        )  # fmt: skip
        missing = await dapr.invoke("catalog-api", "api/catalog/items/999999999")
        return [items, picture, again, missing]

    items, picture, again, missing = run_with(sidecar, use)
    assert items.status == 200
    assert sorted(item["id"] for item in items.json()) == [1, 2]
    assert picture.status == 200
    assert picture.headers["Content-Type"].startswith("image/")
    assert picture.etag
    assert again.status == 304
    assert again.body == b""
    assert missing.status == 404
    assert missing.json()["status"] == 404


def test_the_sidecar_reports_itself_healthy(sidecar: Sidecar) -> None:
    async def use(dapr: Sidecar) -> tuple[bool, bool]:
        return await dapr.healthy(), await dapr.outbound_ready()

    assert run_with(sidecar, use) == (True, True)


def test_a_closed_port_is_sidecar_unavailable_at_once() -> None:
    dapr = Sidecar(f"http://127.0.0.1:{free_port()}", owner="test", timeout_seconds=5)
    start = time.monotonic()
    with pytest.raises(SidecarUnavailable) as failed:
        run_with(dapr, lambda d: d.get_state(STORE, "k"))
    assert time.monotonic() - start < 1
    assert not failed.value.timed_out
    assert failed.value.status == 503
    assert failed.value.type == "/problems/sidecar-unavailable"
    assert "cannot be reached" in str(failed.value)
    assert run_with(dapr, lambda d: d.healthy()) is False


def test_a_sidecar_that_never_answers_is_sidecar_unavailable_after_the_timeout() -> None:
    # A listening socket that never accepts: the kernel completes the connection, nobody reads.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        dapr = Sidecar(f"http://127.0.0.1:{port}", owner="test", timeout_seconds=0.5)
        start = time.monotonic()
        with pytest.raises(SidecarUnavailable) as failed:
            run_with(dapr, lambda d: d.publish("pubsub", "t", {}))
        took = time.monotonic() - start
        assert 0.4 < took < 2
        assert failed.value.timed_out
        assert "did not answer in time" in str(failed.value)


def test_settings_read_daprs_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAPR_HOST", "10.0.0.7")
    monkeypatch.setenv("DAPR_HTTP_PORT", "3600")
    monkeypatch.setenv("DAPR_API_TOKEN", "secret")
    monkeypatch.setenv("DAPR_TIMEOUT_SECONDS", "1.5")

    class Service(SidecarSettings):
        dapr_timeout_seconds: float = 3.0

    settings = Service()
    assert settings.dapr_url == "http://10.0.0.7:3600"
    assert settings.dapr_timeout_seconds == 1.5
    assert settings.dapr_api_token is not None
    assert settings.dapr_api_token.get_secret_value() == "secret"
    monkeypatch.delenv("DAPR_TIMEOUT_SECONDS")
    assert Service().dapr_timeout_seconds == 3.0
