"""The one client every service has to its Dapr sidecar, over the sidecar's HTTP API.

Each service makes one `Sidecar` in its lifespan and closes it on shutdown: one
`aiohttp.ClientSession`, so one pool of kept-alive connections to the sidecar, carries every
call. The building blocks are the ones the sample uses:

- state: get, bulk get, save (ETag, concurrency and consistency, metadata such as
  `ttlInSeconds`), delete: https://docs.dapr.io/reference/api/state_api/
- service invocation (`/v1.0/invoke/<app-id>/method/<path>`):
  https://docs.dapr.io/reference/api/service_invocation_api/
- publish (`/v1.0/publish/<pubsub>/<topic>`, CloudEvent fields as `metadata.cloudevent.*`):
  https://docs.dapr.io/reference/api/pubsub_api/
- the sidecar's own health (`/v1.0/healthz`, `/v1.0/healthz/outbound`):
  https://docs.dapr.io/reference/api/health_api/

Why aiohttp over HTTP, and not the Dapr SDK's gRPC client or httpx: docs/performance.md measured
all three from one process against one daprd (scripts/bench_basket.py prints the comparison).

Errors: when the sidecar cannot be reached, drops the connection or does not answer in time, every
call raises `SidecarUnavailable` (503, `/problems/sidecar-unavailable`). When it answers with an
error, the state and publish calls raise `DaprError` (a 409 on a save: `StateConflict`); each
service says which of its dependencies that was. Invocation returns every answer as it came: the
status is the called app's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import quote, urlencode

import aiohttp
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from yarl import URL

from eshop_common.problems import ServiceUnavailable

Consistency = Literal["strong", "eventual"]
Concurrency = Literal["first-write", "last-write"]

# Connections to the sidecar at once; a request past this waits for one (inside the timeout).
MAX_CONNECTIONS = 100
# How long an idle connection stays open for the next call (daprd keeps its side longer).
KEEPALIVE_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 2.0
# Probes answer fast or not at all.
HEALTH_TIMEOUT_SECONDS = 2.0

JSON_HEADERS = {"Content-Type": "application/json"}


class SidecarSettings(BaseSettings):
    """The sidecar's address, token and timeout, read from Dapr's own variables (DAPR_HOST,
    DAPR_HTTP_PORT, DAPR_API_TOKEN; `dapr run` and the compose file set them) and
    DAPR_TIMEOUT_SECONDS. A service's settings inherit it next to ServiceSettings, and may give
    `dapr_timeout_seconds` another default."""

    model_config = SettingsConfigDict(extra="ignore")

    dapr_host: str = "127.0.0.1"
    dapr_http_port: int = 3500
    dapr_api_token: SecretStr | None = None
    # Upper bound, in seconds, for one call through the sidecar as a whole; the sidecar's
    # resiliency policy (or the called app's sidecar) retries inside it.
    dapr_timeout_seconds: float = 5.0

    @property
    def dapr_url(self) -> str:
        return f"http://{self.dapr_host}:{self.dapr_http_port}"


class SidecarUnavailable(ServiceUnavailable):
    """The sidecar refused the connection, dropped it or did not answer in time (503).
    `timed_out` tells the last apart: the sidecar was there, whatever is behind it was slow."""

    type = "/problems/sidecar-unavailable"

    def __init__(self, detail: str, *, timed_out: bool = False, **extensions: Any) -> None:
        super().__init__(detail, **extensions)
        self.timed_out = timed_out


class DaprError(Exception):
    """The sidecar answered a state or publish call with an error. `str()` is what it said:
    `HTTP 500 ERR_STATE_SAVE: <message>`, or `HTTP 500` when it sent no Dapr error body."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status


class StateConflict(DaprError):
    """A first-write save or a delete whose ETag no longer matches (409)."""


@dataclass(frozen=True, slots=True)
class SidecarReply:
    """One answer as it came: `status`, the raw `body` bytes and the response `headers`
    (case-insensitive)."""

    status: int
    body: bytes
    headers: Mapping[str, str]

    @property
    def etag(self) -> str | None:
        return self.headers.get("etag")

    def json(self) -> Any:
        """The body parsed as JSON. Raises ValueError when it is not JSON."""
        return json.loads(self.body)

    def dapr_error(self) -> str:
        """A short description of an error answer: `HTTP 409 ERR_STATE_SAVE: <message>` when
        the body is Dapr's error JSON (`errorCode`, `message`), `HTTP 409` otherwise."""
        try:
            body = self.json()
        except (ValueError, UnicodeDecodeError):
            return f"HTTP {self.status}"
        if isinstance(body, dict) and "errorCode" in body:
            return f"HTTP {self.status} {body['errorCode']}: {body.get('message', '')}"
        return f"HTTP {self.status}"

    def raise_error(self) -> None:
        """Raises DaprError (StateConflict for 409) describing this answer."""
        kind = StateConflict if self.status == 409 else DaprError
        raise kind(self.status, self.dapr_error())


@dataclass(frozen=True, slots=True)
class NotJson:
    """A stored value that is not JSON; no model validates it, so it reads as unreadable."""

    raw: bytes


@dataclass(frozen=True, slots=True)
class StateEntry:
    """A state entry: the JSON value (`NotJson` when it is not JSON, None when there is no
    entry) and its ETag (None when there is no entry)."""

    value: Any | None
    etag: str | None


# Integers beyond this lose digits on the way: daprd decodes a JSON value into float64 (RFC 8259
# §6: numbers outside [-(2**53)+1, (2**53)-1] are not interoperable exactly).
EXACT_INTEGER_MAX = 2**53 - 1


def json_body(value: Any) -> bytes:
    """Compact UTF-8 JSON. Raises ValueError for what JSON, or the sidecar, cannot carry as it
    is: NaN and infinities (JSON has none), integers beyond ±EXACT_INTEGER_MAX (the sidecar
    would store them rounded, silently)."""
    _check_exact_integers(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _check_exact_integers(value: Any) -> None:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
        elif isinstance(item, int) and not -EXACT_INTEGER_MAX <= item <= EXACT_INTEGER_MAX:
            raise ValueError(f"{item} is beyond the integers JSON carries exactly (RFC 8259 §6)")


def segment(key: str) -> str:
    """`key` as one URL path segment. Percent-encoded, so no key can add a segment or a query.
    `+` too: daprd reads a `+` in the key segment as a space, so `a+b` would be saved (the key
    travels in the body) but read back as `a b`. `:` and `@` stay as they are. A key of `.` or
    `..` goes as `%2E` or `%2E%2E`, which names the key instead of a dot segment (RFC 3986
    §5.2.4); request() sends the URL as it is, without normalising it. Raises ValueError for
    the empty key, which names no entry."""
    if key in (".", ".."):
        return key.replace(".", "%2E")
    if not key:
        raise ValueError("a state key cannot be empty")
    return quote(key, safe=":@")


class Sidecar:
    """The service's one client to its sidecar. Use it as an async context manager (in the
    lifespan): the session opens on enter and closes on exit.

    `owner` names the service in error details ("The basket's Dapr sidecar did not answer in
    time."). `timeout_seconds` bounds each call as a whole, from waiting for a pooled connection
    to the last byte of the answer: an answer that comes a byte at a time cannot hold a call (and
    the request behind it) for longer."""

    def __init__(
        self,
        base_url: str,
        *,
        owner: str,
        api_token: str | None = None,
        timeout_seconds: float = 5.0,
    ) -> None:
        self._base_url = base_url
        self._owner = owner
        self._headers = {"dapr-api-token": api_token} if api_token else {}
        self._timeout = aiohttp.ClientTimeout(
            total=timeout_seconds, sock_connect=CONNECT_TIMEOUT_SECONDS
        )
        self._health_timeout = aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_SECONDS)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: SidecarSettings, *, owner: str) -> Self:
        token = settings.dapr_api_token
        return cls(
            settings.dapr_url,
            owner=owner,
            api_token=token.get_secret_value() if token else None,
            timeout_seconds=settings.dapr_timeout_seconds,
        )

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE_SECONDS
            ),
            headers=self._headers,
            timeout=self._timeout,
            cookie_jar=aiohttp.DummyCookieJar(),  # the sidecar sets none; don't parse for them
            trust_env=False,  # never a proxy between a service and its sidecar
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        limit: aiohttp.ClientTimeout | None = None,
    ) -> SidecarReply:
        """One request to the sidecar: `url` is the path and query (`/v1.0/...`), already
        percent-encoded (segment(), urlencode()); it is sent as it is. Returns the answer
        whatever its status; `limit` replaces the client's timeouts for this call. Raises
        SidecarUnavailable (503) when the sidecar refuses, drops or does not answer in time, or
        when this client is not open (before the lifespan opened it, after it closed it)."""
        if self._session is None:
            raise SidecarUnavailable(f"The {self._owner}'s Dapr sidecar client is not open.")
        try:
            async with self._session.request(
                method, URL(self._base_url + url, encoded=True), data=content, headers=headers,
                timeout=limit or self._timeout,
            ) as resp:  # fmt: skip
                return SidecarReply(resp.status, await resp.read(), resp.headers)
        except TimeoutError:
            raise SidecarUnavailable(
                f"The {self._owner}'s Dapr sidecar did not answer in time.", timed_out=True
            ) from None
        except aiohttp.ClientError as exc:
            raise SidecarUnavailable(
                f"The {self._owner}'s Dapr sidecar cannot be reached: {exc}."
            ) from None

    # -- state: https://docs.dapr.io/reference/api/state_api/ ----------------------------------
    async def get_state(
        self, store: str, key: str, *, consistency: Consistency | None = None
    ) -> StateEntry:
        """GET /v1.0/state/<store>/<key>: the entry, `StateEntry(None, None)` when there is none.
        Raises DaprError, SidecarUnavailable (503)."""
        url = f"/v1.0/state/{store}/{segment(key)}"
        if consistency is not None:
            url += f"?consistency={consistency}"
        resp = await self.request("GET", url)
        if resp.status == 204:
            return StateEntry(None, None)
        if resp.status != 200:
            resp.raise_error()
        try:
            return StateEntry(resp.json(), resp.etag)
        except ValueError:  # written past the service (redis-cli, say): not even JSON
            return StateEntry(NotJson(resp.body), resp.etag)

    async def get_bulk_state(
        self, store: str, keys: list[str], *, parallelism: int = 10
    ) -> dict[str, StateEntry]:
        """POST /v1.0/state/<store>/bulk (https://docs.dapr.io/reference/api/state_api/
        #get-bulk-state): the entries of `keys` by key, in one call; keys that do not exist come
        back as `StateEntry(None, None)`. Raises DaprError (also when one key failed),
        SidecarUnavailable (503).

        A value that is not JSON makes daprd 1.18 answer the whole bulk read with an empty body
        (it cannot encode that value); the keys are then read one by one, so only that key reads
        as NotJson."""
        resp = await self.request(
            "POST", f"/v1.0/state/{store}/bulk",
            content=json_body({"keys": keys, "parallelism": parallelism}), headers=JSON_HEADERS,
        )  # fmt: skip
        if resp.status != 200:
            resp.raise_error()
        try:
            items = resp.json()
        except ValueError:
            return {key: await self.get_state(store, key) for key in keys}
        if not isinstance(items, list) or not all(
            isinstance(item, dict) and isinstance(item.get("key"), str) for item in items
        ):
            raise DaprError(resp.status, "the bulk answer is not a list of {key, ...} items")
        entries: dict[str, StateEntry] = {}
        for item in items:
            if item.get("error"):
                raise DaprError(resp.status, str(item["error"]))
            entries[item["key"]] = StateEntry(item.get("data"), item.get("etag"))
        return entries

    async def save_state(
        self,
        store: str,
        key: str,
        value: Any,
        *,
        etag: str | None = None,
        concurrency: Concurrency | None = None,
        consistency: Consistency | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """POST /v1.0/state/<store>: save `value` (JSON) under `key`. With `etag` and
        first-write, only over the entry that has that ETag; with first-write and no `etag`,
        only if there is no entry (stores report a clash there as a plain 500, not a 409).
        `metadata` goes with the item, e.g. `{"ttlInSeconds": "3600"}`. Raises StateConflict
        (409), DaprError, SidecarUnavailable (503)."""
        item: dict[str, Any] = {"key": key, "value": value}
        options = {
            name: option
            for name, option in (("concurrency", concurrency), ("consistency", consistency))
            if option is not None
        }
        if options:
            item["options"] = options
        if metadata:
            item["metadata"] = dict(metadata)
        if etag is not None:
            item["etag"] = etag
        resp = await self.request(
            "POST", f"/v1.0/state/{store}", content=json_body([item]), headers=JSON_HEADERS
        )
        if resp.status not in (200, 204):
            resp.raise_error()

    async def delete_state(
        self,
        store: str,
        key: str,
        *,
        etag: str | None = None,
        concurrency: Concurrency | None = None,
        consistency: Consistency | None = None,
    ) -> None:
        """DELETE /v1.0/state/<store>/<key>, only if its ETag is still `etag` when given (the
        `If-Match` header). Deleting what is not there succeeds. Raises StateConflict (409),
        DaprError, SidecarUnavailable (503)."""
        query = urlencode(
            {
                name: option
                for name, option in (("concurrency", concurrency), ("consistency", consistency))
                if option is not None
            }
        )
        resp = await self.request(
            "DELETE", f"/v1.0/state/{store}/{segment(key)}" + (f"?{query}" if query else ""),
            headers={"If-Match": etag} if etag is not None else None,
        )  # fmt: skip
        if resp.status not in (200, 204):
            resp.raise_error()

    # -- service invocation: https://docs.dapr.io/reference/api/service_invocation_api/ -------
    async def invoke(
        self,
        app_id: str,
        path: str,
        *,
        method: str = "GET",
        query: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> SidecarReply:
        """`method` /v1.0/invoke/<app_id>/method/<path>?<query>: the called app's answer as it
        came, whatever its status (a Dapr error body when the call never reached the app).
        `path` is sent as it is: percent-encode what comes from outside (segment()); `query` is
        encoded here.
        `headers` go through to the app (Authorization, If-Match, If-None-Match,
        Idempotency-Key...); the trace's `traceparent` is added by the OpenTelemetry aiohttp
        instrumentation. Raises SidecarUnavailable (503, `timed_out` when the answer took longer
        than the timeout)."""
        url = f"/v1.0/invoke/{app_id}/method/{path}"
        if query:
            url += f"?{urlencode(query)}"
        return await self.request(method, url, content=content, headers=headers)

    # -- publish: https://docs.dapr.io/reference/api/pubsub_api/ -----------------------------
    async def publish(
        self,
        pubsub: str,
        topic: str,
        data: Any,
        *,
        cloudevent: Mapping[str, str | None] | None = None,
    ) -> None:
        """POST /v1.0/publish/<pubsub>/<topic>: `data` (JSON) as the data of a CloudEvent that
        the sidecar wraps it in. `cloudevent` sets its fields (`id`, `type`, `source`...) as
        `metadata.cloudevent.<field>` query parameters; None values keep the sidecar's default.
        Raises DaprError, SidecarUnavailable (503)."""
        url = f"/v1.0/publish/{pubsub}/{quote(topic, safe='')}"
        fields = {f"metadata.cloudevent.{k}": v for k, v in (cloudevent or {}).items() if v}
        if fields:
            url += f"?{urlencode(fields)}"
        resp = await self.request("POST", url, content=json_body(data), headers=JSON_HEADERS)
        if resp.status != 204:
            resp.raise_error()

    # -- health: https://docs.dapr.io/reference/api/health_api/ ------------------------------
    async def healthy(self) -> bool:
        """GET /v1.0/healthz: the sidecar is up and its components are initialized (204).
        False, within HEALTH_TIMEOUT_SECONDS, for any other answer or none."""
        return await self._probe("/v1.0/healthz")

    async def outbound_ready(self) -> bool:
        """GET /v1.0/healthz/outbound: the sidecar can serve this app's calls (its components
        are ready), whether or not the app is. False, within HEALTH_TIMEOUT_SECONDS, for any
        other answer or none."""
        return await self._probe("/v1.0/healthz/outbound")

    async def _probe(self, url: str) -> bool:
        try:
            resp = await self.request("GET", url, limit=self._health_timeout)
        except SidecarUnavailable:
            return False
        return resp.status == 204
