"""The shared sidecar client (eshop_common.sidecar) against what an adversarial review tried: keys
that reach the URL, sidecars that misbehave on the wire (slow, dripping, closing, odd answers),
cancellation and the pool, values the sidecar would change. Each test states the behaviour the
client promises; those named after a fault failed before its fix."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import TypeVar

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from devstack.testkit import fake_sidecar, run_with
from eshop_common.sidecar import (
    EXACT_INTEGER_MAX,
    DaprError,
    Sidecar,
    SidecarUnavailable,
    StateEntry,
    json_body,
    segment,
)

T = TypeVar("T")
STORE = "statestore"


# -- keys that reach the URL path ---------------------------------------------------------------


@pytest.mark.parametrize("odd", [".", ".."])
def test_a_dot_segment_key_reads_and_deletes_its_own_entry(sidecar: Sidecar, odd: str) -> None:
    """`segment()` promises that "no key can add a segment or a query". A key of "." or ".."
    went unencoded, and the URL library removed it as a dot segment (RFC 3986 §5.2.4), so the
    read went to `/v1.0/state/statestore/` or `/v1.0/state/` instead of the key that was
    saved (the save carries the key in the body and succeeded). The client must read back what
    it saved (or refuse the key before any call), never ask the sidecar for another URL."""

    async def use(dapr: Sidecar) -> tuple[StateEntry | BaseException, ...]:
        await dapr.save_state(STORE, odd, {"odd": odd})
        try:
            read: StateEntry | BaseException = await dapr.get_state(STORE, odd)
        except Exception as exc:
            read = exc
        try:
            await dapr.delete_state(STORE, odd)
            after: StateEntry | BaseException = await dapr.get_state(STORE, odd)
        except Exception as exc:
            after = exc
        return read, after

    read, after = run_with(sidecar, use)
    assert read == StateEntry({"odd": odd}, read.etag if isinstance(read, StateEntry) else None), (
        f"saved under {odd!r}, read back {read!r}"
    )
    assert after == StateEntry(None, None), f"deleted {odd!r}, then read {after!r}"


# -- misbehaving sidecars -------------------------------------------------------------------


def test_a_sidecar_that_drips_its_answer_does_not_hold_a_call_forever() -> None:
    """A sidecar (or the app behind an invocation) that sends the headers and then one byte of
    the body every 0.3 s never tripped the 0.5 s per-read timeout, and there was no overall
    limit, so the call waited as long as the drip lasted: the service's client hung instead
    of getting a 503 in bounded time (ADVERSARY.md "Overload and outage": answer in
    bounded time). Here the drip lasts 20 s; the call must end well before."""

    async def drip(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.content_length = 100
        await resp.prepare(request)
        for _ in range(66):
            await resp.write(b" ")
            await asyncio.sleep(0.3)
        return resp

    async def main() -> tuple[float, BaseException | None]:
        runner, url = await fake_sidecar(drip)
        try:
            async with Sidecar(url, owner="test", timeout_seconds=0.5) as dapr:
                start = time.monotonic()
                try:
                    await asyncio.wait_for(dapr.get_state(STORE, "k"), timeout=6)
                except TimeoutError:
                    return time.monotonic() - start, None
                except SidecarUnavailable as exc:
                    return time.monotonic() - start, exc
                return time.monotonic() - start, None
        finally:
            await runner.cleanup()

    took, error = asyncio.run(main())
    assert isinstance(error, SidecarUnavailable), f"no 503 after {took:.1f}s of a dripping answer"
    assert took < 3


def test_a_bulk_answer_of_unexpected_json_is_a_dapr_error_not_a_crash() -> None:
    """get_bulk_state promises to raise DaprError or SidecarUnavailable. A 200 answer whose
    JSON is not a list of objects (a proxy's JSON, `null`, an object) escaped as TypeError /
    AttributeError, which the basket's error mapping does not catch: a bare 500 to the
    client instead of a 503 problem."""

    bodies = [b"null", b'{"items": []}', b"[1, 2]", b'[{"data": 1}]']
    answers = iter(bodies)

    async def odd(request: web.Request) -> web.Response:
        return web.Response(status=200, body=next(answers), content_type="application/json")

    async def main() -> list[str]:
        runner, url = await fake_sidecar(odd)
        escaped = []
        try:
            async with Sidecar(url, owner="test", timeout_seconds=2) as dapr:
                for body in bodies:
                    try:
                        await dapr.get_bulk_state(STORE, ["a", "b"])
                    except (DaprError, SidecarUnavailable):
                        pass
                    except Exception as exc:
                        escaped.append(f"{body!r}: {type(exc).__name__}: {exc}")
                    else:
                        escaped.append(f"{body!r}: accepted")
        finally:
            await runner.cleanup()
        return escaped

    assert asyncio.run(main()) == []


def test_cancelled_calls_leak_no_connection() -> None:
    """Cancel many calls while they wait for the answer (a client that went away); the pool
    (100 connections) must not keep them, so a later call still goes through at once."""
    release = asyncio.Event

    async def main() -> float:
        hold: asyncio.Event = release()

        async def handler(request: web.Request) -> web.Response:
            if request.path.endswith("/slow"):
                await hold.wait()
            return web.Response(status=204)

        runner, url = await fake_sidecar(handler)
        try:
            async with Sidecar(url, owner="test", timeout_seconds=1) as dapr:
                for _ in range(3):
                    tasks = [asyncio.create_task(dapr.get_state(STORE, "slow")) for _ in range(120)]
                    await asyncio.sleep(0.2)
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                start = time.monotonic()
                assert await dapr.get_state(STORE, "fast") == StateEntry(None, None)
                return time.monotonic() - start
        finally:
            hold.set()
            await runner.cleanup()

    assert asyncio.run(main()) < 0.5


def test_a_sidecar_that_closes_mid_answer_is_sidecar_unavailable() -> None:
    async def cut(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.content_length = 1000
        await resp.prepare(request)
        await resp.write(b'{"a": ')
        assert request.transport is not None
        request.transport.close()
        return resp

    async def main() -> BaseException | None:
        runner, url = await fake_sidecar(cut)
        try:
            async with Sidecar(url, owner="test", timeout_seconds=2) as dapr:
                try:
                    await dapr.get_state(STORE, "k")
                except Exception as exc:
                    return exc
                return None
        finally:
            await runner.cleanup()

    assert isinstance(asyncio.run(main()), SidecarUnavailable)


def test_garbage_instead_of_http_is_sidecar_unavailable() -> None:
    async def main() -> BaseException | None:
        async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1000)
            writer.write(b"<html>nope</html>\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(garbage, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with Sidecar(f"http://127.0.0.1:{port}", owner="t", timeout_seconds=2) as d:
                try:
                    await d.publish("pubsub", "t", {})
                except Exception as exc:
                    return exc
                return None
        finally:
            server.close()

    assert isinstance(asyncio.run(main()), SidecarUnavailable)


def test_a_call_after_close_is_sidecar_unavailable_not_an_assertion() -> None:
    """A call that arrives after the lifespan closed the client (a background task, the
    catalog's relay thread finishing a publish) should be a 503 the callers already handle,
    not an AssertionError (or, under `python -O`, AttributeError on None)."""

    async def main() -> BaseException | None:
        dapr = Sidecar("http://127.0.0.1:9", owner="test", timeout_seconds=1)
        async with dapr:
            pass
        try:
            await dapr.publish("pubsub", "t", {})
        except Exception as exc:
            return exc
        return None

    error = asyncio.run(main())
    assert isinstance(error, SidecarUnavailable), repr(error)


# -- values ----------------------------------------------------------------------------------


def test_an_integer_beyond_2_53_is_kept_or_refused_never_silently_changed(sidecar: Sidecar) -> None:
    """daprd decodes a saved value into float64 and stores the rounded number:
    9007199254740993 was read back as 9007199254740992, 2**70 as 1.1805916207174113e+21, with
    no error. json_body already refuses what JSON cannot carry
    (NaN); an integer the sidecar cannot carry must be refused the same way (ValueError) rather
    than stored changed (RFC 8259 §6: beyond 2**53 numbers lose interoperable precision)."""
    name = f"adv-int-{uuid.uuid4().hex[:8]}"
    value = {"n": 2**53 + 1, "big": 2**70}

    async def use(dapr: Sidecar) -> StateEntry | None:
        try:
            await dapr.save_state(STORE, name, value)
        except ValueError:
            return None
        return await dapr.get_state(STORE, name)

    read = run_with(sidecar, use)
    assert read is None or read.value == value, f"saved {value}, read back {read.value}"


@given(
    st.recursive(st.integers(), lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner))
)
def test_json_body_sends_every_integer_exactly_or_refuses_it(value: object) -> None:
    """Generated values: json_body either refuses (an integer beyond ±(2**53 - 1) somewhere in
    it) or sends text that float64 parsing, as daprd does, reads back unchanged."""

    def exact(v: object) -> bool:
        if isinstance(v, dict):
            return all(exact(x) for x in v.values())
        if isinstance(v, list):
            return all(exact(x) for x in v)
        return isinstance(v, int) and abs(v) <= EXACT_INTEGER_MAX

    try:
        body = json_body(value)
    except ValueError:
        assert not exact(value)
        return
    assert exact(value)
    assert json.loads(body, parse_int=float) == value


def test_the_empty_key_is_refused_before_any_call() -> None:
    with pytest.raises(ValueError, match="empty"):
        segment("")
