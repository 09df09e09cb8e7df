"""The basket's state calls made with the official Dapr Python SDK instead of raw HTTP.

    uv run python docs/examples/sdk_state.py alice

Talks gRPC to the basket-api sidecar of a running stack (`make run`): DAPR_GRPC_PORT (default
3602, dapr.yaml's), DAPR_HTTP_PORT (3502: the SDK waits on the sidecar's health endpoint before
its first call) and DAPR_API_TOKEN (default: the sample's demo token) say where and how.
Every line it prints is checked by the docs tests against a real sidecar.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("DAPR_GRPC_PORT", "3602")
os.environ.setdefault("DAPR_HTTP_PORT", "3502")
os.environ.setdefault("DAPR_API_TOKEN", "eshop-demo-dapr-api-token")

from dapr.clients import DaprClient  # reads the variables above on import
from dapr.clients.exceptions import DaprGrpcError
from dapr.clients.grpc._state import Concurrency, Consistency, StateOptions

STORE = "statestore"
FIRST_WRITE = StateOptions(concurrency=Concurrency.first_write, consistency=Consistency.strong)


def main(buyer: str) -> None:
    key = f"sdk-example-{buyer}"
    with DaprClient() as dapr:
        # GET /v1.0/state/statestore/<key>: an entry that does not exist has no data, no ETag.
        empty = dapr.get_state(STORE, key)
        print(f"before: data={empty.data!r} etag={empty.etag!r}")

        # POST /v1.0/state/statestore with first-write, a TTL, and no ETag: create.
        basket = {"buyerId": buyer, "items": [{"productId": 1, "quantity": 2}]}
        dapr.save_state(
            STORE, key, json.dumps(basket), options=FIRST_WRITE,
            state_metadata={"ttlInSeconds": "3600"},
        )  # fmt: skip
        saved = dapr.get_state(STORE, key, state_metadata={"consistency": "strong"})
        print(f"saved: {json.loads(saved.data)['items']} etag={saved.etag}")

        # A save that names the ETag it read succeeds, and the ETag moves on.
        basket["items"][0]["quantity"] = 3
        dapr.save_state(STORE, key, json.dumps(basket), etag=saved.etag, options=FIRST_WRITE)
        current = dapr.get_state(STORE, key)
        print(f"updated with etag {saved.etag}: etag={current.etag}")

        # A save with the old ETag is refused: the lost update the basket service prevents.
        try:
            dapr.save_state(STORE, key, json.dumps(basket), etag=saved.etag, options=FIRST_WRITE)
        except DaprGrpcError as exc:
            print(f"stale etag {saved.etag}: refused ({exc.code().name})")

        # POST /v1.0/state/statestore/bulk: several keys in one call.
        bulk = dapr.get_bulk_state(STORE, [key, f"{key}-none"])
        print("bulk:", [(item.key, item.etag or None) for item in bulk.items])

        # DELETE /v1.0/state/statestore/<key> with If-Match.
        dapr.delete_state(STORE, key, etag=current.etag, options=FIRST_WRITE)
        print(f"deleted: data={dapr.get_state(STORE, key).data!r}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "alice")
