"""What the sidecar hops cost, as the traces show it: N storefront adds (the POST a browser sends),
each in a trace of its own, read back from Jaeger; the median of each hop's added time
(devstack.traces.hop_costs says how each is taken).

    make run                                   # in another terminal
    uv run python scripts/trace_hops.py        # dapr.yaml's ports: storefront 5100, Jaeger 16686
    uv run python scripts/trace_hops.py --web http://127.0.0.1:5100 --jaeger http://127.0.0.1:16686
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
import uuid

import httpx

from devstack.runfile import load_run_file, load_store_ports
from devstack.stack import RUN_FILE
from devstack.traces import Jaeger, Trace, hop_costs, new_traceparent

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf(page: httpx.Response) -> str:
    match = CSRF.search(page.text)
    if not match:
        raise RuntimeError(f"no form on {page.url}")
    return match[1]


def complete(trace: Trace) -> bool:
    return len(trace.roots()) == 1 and bool(trace.find("catalog-api", "SELECT"))


def main(argv: list[str] | None = None) -> int:
    apps, ports = load_run_file(RUN_FILE), load_store_ports(RUN_FILE)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--web", default=f"http://127.0.0.1:{apps['webshop'].app_port}")
    parser.add_argument("--jaeger", default=f"http://127.0.0.1:{ports.jaeger_ui}")
    parser.add_argument("-n", type=int, default=30, help="how many adds")
    args = parser.parse_args(argv)
    jaeger = Jaeger(args.jaeger)
    costs: dict[str, list[float]] = {}
    with httpx.Client(base_url=args.web, timeout=30) as web:
        page = web.get("/signin")
        web.post(
            "/signin", data={"csrf_token": csrf(page), "user_name": f"hops-{uuid.uuid4().hex[:8]}"}
        )
        trace_ids = []
        for n in range(args.n):
            page = web.get("/items/1")
            trace_id, traceparent = new_traceparent()
            web.post(
                "/basket/items",
                data={"csrf_token": csrf(page), "product_id": "1", "quantity": "1"},
                headers={"traceparent": traceparent},
            )
            if n % 10 == 9:  # keep the basket small: a line's quantity has a limit
                page = web.get("/basket")
                web.post("/basket/items/1/remove", data={"csrf_token": csrf(page)})
            trace_ids.append(trace_id)
            time.sleep(0.1)
    for trace_id in trace_ids:
        for name, ms in hop_costs(jaeger.wait_for(trace_id, complete)).items():
            costs.setdefault(name, []).append(ms)
    print(f"{args.n} storefront adds (POST /basket/items): ms each hop adds, from their traces")
    for name, values in costs.items():
        p90 = statistics.quantiles(values, n=10)[-1]
        print(f"  {name:<24} median {statistics.median(values):6.2f}   p90 {p90:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
