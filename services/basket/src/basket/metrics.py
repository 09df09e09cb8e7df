"""The basket's own metrics, beside eshop_common's request histogram (served at /metrics)."""

from prometheus_client import Counter

ETAG_CONFLICTS = Counter(
    "basket_etag_conflicts",
    "Basket saves the state store refused because the basket's ETag had moved since it was read "
    "(another replica saved first).",
)
WRITE_RETRIES = Counter(
    "basket_write_retries",
    "Read-modify-write cycles started again after an ETag conflict.",
    ["operation"],  # update | checkout
)
CHECKOUTS = Counter(
    "basket_checkouts",
    "Checkout requests by outcome: accepted, or why not.",
    ["outcome"],
)
CHECKOUT_RESULTS = Counter(
    "basket_checkout_results",
    "The catalog's answers to checkouts as the basket handled them (a redelivered event counts "
    "again).",
    ["result"],  # reserved | rejected
)
