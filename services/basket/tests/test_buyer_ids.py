"""Every accepted buyer id maps to exactly its own key: over generated token subjects, each is
either refused (400/401) or a working basket that no other subject shares; never a 5xx."""

from __future__ import annotations

import uuid

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.stack import DEMO_DAPR_API_TOKEN, DEMO_JWT_SECRET
from devstack.testkit import quantities
from devstack.testkit import unique_user as buyer
from eshop_common.auth import mint_token

# Dot segments, separators, percent-encodings, Dapr's key separator, the service's own key
# prefixes, unicode, NUL and lengths around the limit: what an adversary would try first.
TRICKY = [
    ".", "..", "...", "./a", "../a", "a/..", "a/b", "/", "%2F", "%2e", "%2E%2E", "||", "a||b",
    "a+b", "+0.0", ":", "price:1", "product-price:1", "idempotency:a:b", "?x=1", "#f", " ",
    "a b", "\t", "ü", "\x00", "a" * 128, "a" * 129, "A", "a", "@", "+", "-", "_",
]  # fmt: skip
subjects = st.one_of(
    st.sampled_from(TRICKY),
    st.from_regex(r"[A-Za-z0-9._@+-]{1,6}", fullmatch=True),
    st.text(max_size=8),
)


def test_generated_subjects_are_refused_or_get_their_own_basket(basket_stack, products):
    url = basket_stack.url("basket-api")
    victim = buyer("victim")
    pid = products[0]["id"]
    with httpx.Client(base_url=url, timeout=30) as http:

        def call(subject: str, method: str, **kwargs) -> httpx.Response:
            token = mint_token(DEMO_JWT_SECRET, subject)
            return http.request(
                method, "/api/basket", headers={"Authorization": f"Bearer {token}"}, **kwargs
            )

        call(victim, "PUT", json={"items": [{"productId": pid, "quantity": 99}]})

        @settings(
            max_examples=40,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )
        @given(st.lists(subjects, min_size=1, max_size=4, unique=True))
        def check(names: list[str]) -> None:
            accepted = {}
            for quantity, subject in enumerate(names, start=1):
                resp = call(
                    subject, "PUT", json={"items": [{"productId": pid, "quantity": quantity}]}
                )
                assert resp.status_code in (200, 400, 401), (subject, resp.status_code, resp.text)
                if resp.status_code == 200:
                    accepted[subject] = quantity
            for subject, quantity in accepted.items():
                resp = call(subject, "GET")
                assert resp.status_code == 200, (subject, resp.text)
                assert resp.json()["buyerId"] == subject
                assert quantities(resp.json()) == {pid: quantity}, subject
            assert quantities(call(victim, "GET").json()) == {pid: 99}

        check()


def test_the_control_unencoded_keys_in_the_sidecar_url_reach_other_keys(basket_stack):
    """Why api.py refuses `.` and `..` and state.py percent-encodes the key segment: saved with
    the key in the body, read back with the key as a raw path segment, `a+b` comes back as
    `a b` (not found) and `..` is removed from the path (RFC 3986 §5.2.4)."""
    headers = {"dapr-api-token": DEMO_DAPR_API_TOKEN}
    with httpx.Client(base_url=basket_stack.dapr_url("basket-api"), headers=headers) as dapr:
        for key, raw, encoded in [("a+b", "a+b", "a%2Bb"), ("..", "..", None)]:
            scoped = f"control-{uuid.uuid4().hex[:8]}{key}" if key != ".." else key
            saved = dapr.post("/v1.0/state/statestore", json=[{"key": scoped, "value": 1}])
            assert saved.status_code == 204, saved.text
            raw_read = dapr.get(f"/v1.0/state/statestore/{scoped.replace(key, raw)}")
            assert raw_read.status_code != 200, f"{key!r} was read back through a raw URL"
            if encoded is not None:
                read = dapr.get(f"/v1.0/state/statestore/{scoped.replace(key, encoded)}")
                assert read.status_code == 200
