"""`devstack up`: the whole sample on this machine, from dapr.yaml, until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from devstack.stack import (
    DEMO_DAPR_API_TOKEN,
    DEMO_JWT_SECRET,
    REPO_ROOT,
    STATE_STORES,
    Stack,
    install_daprd,
)
from devstack.store_semantics import GROUPS

# The app a person opens in a browser; the others are APIs.
STOREFRONT = "webshop"


def up(args: argparse.Namespace) -> int:
    from devstack.observability import install_jaeger
    from eshop_common.auth import mint_token

    stack = Stack(
        state_dir=Path(args.state_dir).resolve(),
        daprd=install_daprd(),
        jaeger_binary=install_jaeger(),
        prometheus=True,
        state_store=args.state_store,
        free_ports=args.free_ports,
        stream_logs=True,
        replicas=dict(args.replicas),
    )
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        stack.start()
        print("\nThe stack is ready (Ctrl-C stops everything):", flush=True)
        if STOREFRONT in stack.apps:
            print(f"\n  Open the storefront: {stack.url(STOREFRONT)}/\n")
        for name in stack.instances:
            if name != STOREFRONT:
                print(f"  {name:<12} {stack.url(name)}/docs   sidecar {stack.dapr_url(name)}")
        if stack.jaeger:
            print(f"\n  traces (Jaeger)   {stack.jaeger.url}/search")
        if stack.prometheus_server:
            print(f"  metrics (Prometheus) {stack.prometheus_server.url}/targets")
        print(f"\nA token for alice:\n  export TOKEN={mint_token(DEMO_JWT_SECRET, 'alice')}")
        print(f'  curl -H "Authorization: Bearer $TOKEN" {stack.url("basket-api")}/api/basket')
        print("\nThe sidecars require their API token; alice's basket, straight from the store:")
        print(f"  export DAPR_API_TOKEN={DEMO_DAPR_API_TOKEN}")
        print(f'  curl -H "dapr-api-token: $DAPR_API_TOKEN" '
              f"{stack.dapr_url('basket-api')}/v1.0/state/statestore/alice\n")  # fmt: skip
        # Like compose's `restart: unless-stopped`: a crashed app or sidecar is started again.
        while not stopping.wait(1):
            for name in stack.restart_exited():
                print(f"\n{name} exited; started it again", flush=True)
    except RuntimeError as exc:
        print(f"\nthe stack failed: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        print("\nstopping...", flush=True)
        stack.stop()
    return 0


def docs(args: argparse.Namespace) -> int:
    from devstack.docs import sync_includes

    for doc in sorted((REPO_ROOT / "docs").glob("*.md")):
        if sync_includes(doc, REPO_ROOT):
            print(f"updated {doc.relative_to(REPO_ROOT)}")
    return 0


def lost_updates(args: argparse.Namespace) -> int:
    from devstack.experiments import report

    report(args.basket, args.sidecar, args.product, args.clients)
    return 0


def outbox_race(args: argparse.Namespace) -> int:
    from devstack.outbox_race import report

    report(args.redis, args.racers)
    return 0


def store_semantics(args: argparse.Namespace) -> int:
    from devstack.store_semantics import report

    report(args.redis, args.postgres, args.group or list(GROUPS))
    return 0


def _replicas(text: str) -> tuple[str, int]:
    app_id, _, count = text.partition("=")
    if not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"expected APP_ID=N with N >= 1, got {text!r}")
    return app_id, int(count)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="devstack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start the stack in the foreground")
    p_up.add_argument("--state-dir", default=str(REPO_ROOT / ".stack"))
    p_up.add_argument("--state-store", choices=STATE_STORES, default="redis")
    p_up.add_argument(
        "--free-ports", action="store_true", help="pick free ports instead of dapr.yaml's"
    )
    p_up.add_argument(
        "--replicas",
        type=_replicas,
        action="append",
        default=[],
        metavar="APP_ID=N",
        help="run N processes of an app, each with its own sidecar (e.g. basket-api=2)",
    )
    p_up.set_defaults(func=up)
    p_docs = sub.add_parser("docs", help="rewrite the files included in docs/ from the repo")
    p_docs.set_defaults(func=docs)
    p_lost = sub.add_parser("lost-updates", help="the lost-update experiment on a running stack")
    p_lost.add_argument("--basket", default="http://127.0.0.1:5102")
    p_lost.add_argument("--sidecar", default="http://127.0.0.1:3502")
    p_lost.add_argument("--product", type=int, default=1)
    p_lost.add_argument("--clients", type=int, default=20)
    p_lost.set_defaults(func=lost_updates)
    p_outbox = sub.add_parser(
        "outbox-race", help="Dapr's outbox on Redis: transactions racing on one ETag"
    )
    p_outbox.add_argument("--redis", default="127.0.0.1:6380", help="host:port of a Redis")
    p_outbox.add_argument("--racers", type=int, default=8)
    p_outbox.set_defaults(func=outbox_race)
    p_semantics = sub.add_parser(
        "store-semantics", help="the same state API calls on Redis and PostgreSQL, side by side"
    )
    p_semantics.add_argument("--redis", default="127.0.0.1:6380", help="host:port of a Redis")
    p_semantics.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5433/postgres",
        help="a PostgreSQL URL whose user may create databases",
    )
    p_semantics.add_argument(
        "--group", action="append", choices=GROUPS, help="only these behaviours (repeatable)"
    )
    p_semantics.set_defaults(func=store_semantics)
    args = parser.parse_args(argv)
    sys.exit(args.func(args))
