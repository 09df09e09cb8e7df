"""Reading traces back from Jaeger's HTTP query API (/api/traces), for tests and docs."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx


def new_traceparent() -> tuple[str, str]:
    """(trace id, W3C traceparent) for a request that starts a sampled trace of its own, as a
    traced client would send it (W3C Trace Context §3.2)."""
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


@dataclass(frozen=True)
class Span:
    span_id: str
    parent_id: str | None
    service: str
    operation: str
    start_us: int
    duration_us: int
    tags: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.tags.get("span.kind", ""))

    @property
    def from_sidecar(self) -> bool:
        """daprd's spans name the Dapr API or building block they stand for."""
        return "dapr.api" in self.tags or "rpc.service" in self.tags


@dataclass(frozen=True)
class Trace:
    trace_id: str
    spans: list[Span]

    @classmethod
    def from_jaeger(cls, doc: dict[str, Any]) -> Trace:
        processes = {key: proc["serviceName"] for key, proc in doc["processes"].items()}
        spans = []
        for raw in doc["spans"]:
            parents = [r["spanID"] for r in raw.get("references", []) if r["refType"] == "CHILD_OF"]
            spans.append(
                Span(
                    raw["spanID"],
                    parents[0] if parents else None,
                    processes[raw["processID"]],
                    raw["operationName"],
                    raw["startTime"],
                    raw["duration"],
                    {tag["key"]: tag["value"] for tag in raw.get("tags", [])},
                )
            )
        return cls(doc["traceID"], spans)

    def find(
        self, service: str, operation: str, *, where: Callable[[Span], bool] | None = None
    ) -> list[Span]:
        """Spans of `service` whose operation starts with `operation`, oldest first."""
        found = [
            s
            for s in self.spans
            if s.service == service
            and s.operation.startswith(operation)
            and (where is None or where(s))
        ]
        return sorted(found, key=lambda s: s.start_us)

    def one(self, service: str, operation: str, **kwargs: Any) -> Span:
        found = self.find(service, operation, **kwargs)
        assert found, f"no {service} span {operation!r} in trace {self.trace_id}:\n{self.outline()}"
        return found[0]

    def ancestors(self, span: Span) -> Iterator[Span]:
        by_id = {s.span_id: s for s in self.spans}
        parent = by_id.get(span.parent_id or "")
        while parent is not None:
            yield parent
            parent = by_id.get(parent.parent_id or "")

    def roots(self) -> list[Span]:
        ids = {s.span_id for s in self.spans}
        return [s for s in self.spans if s.parent_id not in ids]

    def outline(self) -> str:
        """The span tree, one indented line a span: service, operation, duration."""
        children: dict[str | None, list[Span]] = {}
        ids = {s.span_id for s in self.spans}
        for s in self.spans:
            children.setdefault(s.parent_id if s.parent_id in ids else None, []).append(s)
        lines: list[str] = []

        def walk(parent: str | None, depth: int) -> None:
            for s in sorted(children.get(parent, []), key=lambda s: s.start_us):
                lines.append(
                    f"{'  ' * depth}{s.service}: {s.operation} ({s.duration_us / 1000:.1f} ms)"
                )
                walk(s.span_id, depth + 1)

        walk(None, 0)
        return "\n".join(lines)


class Jaeger:
    """Jaeger's query API at `url` (the UI's own backend)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def trace(self, trace_id: str) -> Trace | None:
        resp = httpx.get(f"{self.url}/api/traces/{trace_id}", timeout=10)
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        data = resp.json()["data"]
        return Trace.from_jaeger(data[0]) if data else None

    def search(
        self, service: str, *, operation: str | None = None, since: float, limit: int = 20
    ) -> list[Trace]:
        """Traces with a span of `service` (and `operation`) that started after `since` (a
        time.time()), newest first: GET /api/traces?service=..."""
        params: dict[str, Any] = {"service": service, "start": int(since * 1e6), "limit": limit}
        if operation:
            params["operation"] = operation
        resp = httpx.get(f"{self.url}/api/traces", params=params, timeout=10)
        resp.raise_for_status()
        return [Trace.from_jaeger(doc) for doc in resp.json()["data"] or []]

    def services(self) -> list[str]:
        resp = httpx.get(f"{self.url}/api/services", timeout=10)
        resp.raise_for_status()
        return list(resp.json()["data"] or [])

    def wait_for(self, trace_id: str, done: Callable[[Trace], bool], timeout: float = 30) -> Trace:
        """The trace once `done(trace)` holds: spans arrive in batches, from several processes."""
        deadline = time.monotonic() + timeout
        trace = None
        while time.monotonic() < deadline:
            trace = self.trace(trace_id)
            if trace is not None and done(trace):
                return trace
            time.sleep(0.5)
        outline = trace.outline() if trace else "(no span arrived)"
        raise AssertionError(f"trace {trace_id} incomplete after {timeout:.0f}s:\n{outline}")


def _client_around(trace: Trace, span: Span) -> Span | None:
    """The app's client span that `span` (a sidecar's) answers: its parent, an app span."""
    parent = next(trace.ancestors(span), None)
    return parent if parent is not None and not parent.from_sidecar else None


def hop_costs(trace: Trace) -> dict[str, float]:
    """What the sidecars add to one storefront add, in ms, as its spans show it:

    - `storefront -> basket`: the storefront's call (its HTTP client span) less the basket
      route's own span: two sidecars, the gRPC between them and loopback HTTP at both ends;
    - `basket -> catalog`: the same for the basket's product lookup;
    - `basket -> state store`: the basket's state calls less the sidecar's spans for them, which
      include Redis: the app-to-sidecar HTTP hop alone."""
    costs: dict[str, float] = {}
    pairs = {
        "storefront -> basket": ("basket-api", "POST /api/basket/items"),
        "basket -> catalog": ("catalog-api", "GET /api/catalog/items/by-ids"),
    }
    for name, (service, operation) in pairs.items():
        route = trace.find(service, operation, where=lambda s: s.kind == "server")
        if not route:
            continue
        client = next((s for s in trace.ancestors(route[0]) if not s.from_sidecar), None)
        if client is not None:
            costs[name] = (client.duration_us - route[0].duration_us) / 1000
    state = [
        (client.duration_us - span.duration_us) / 1000
        for span in trace.find("basket-api", "/v1.0/state/", where=lambda s: s.from_sidecar)
        if (client := _client_around(trace, span)) is not None
    ]
    if state:
        costs["basket -> state store"] = sum(state) / len(state)
    return costs
