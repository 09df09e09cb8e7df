"""A model-based test: hypothesis drives the basket API with random sequences of writes, with and
without conditions, and after every step compares the basket with a small in-memory model, on
both stores."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from devstack.stack import DEMO_JWT_SECRET, Stack
from devstack.testkit import SHIPPING, new_product, quantities, unique_user
from eshop_common.auth import mint_token

# How a write names the basket's version: not at all, the current ETag, one seen before, any
# (`*`), or "only if there is none" (`If-None-Match: *`).
CONDITIONS = ["none", "current", "stale", "any", "create-only"]


@pytest.fixture(scope="module")
def model_products(basket_stack: Stack) -> list[int]:
    return [new_product(basket_stack, stock=100_000)["id"] for _ in range(3)]


def test_the_basket_behaves_like_its_model(basket_stack: Stack, model_products):
    url = basket_stack.url("basket-api")

    class BasketMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            token = mint_token(DEMO_JWT_SECRET, unique_user("model"))
            self.http = httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
            )
            self.items: dict[int, int] = {}
            self.stored = False  # whether any basket was ever saved for this buyer
            self.checked_out = False  # whether a checkout of this basket was ever accepted
            self.etag: str | None = None
            self.seen: list[str] = []

        def teardown(self) -> None:
            self.http.close()

        # -- helpers ---------------------------------------------------------------------
        def headers(self, condition: str) -> dict[str, str]:
            stale = next((e for e in self.seen if e != self.etag), '"never-issued"')
            return {
                "none": {},
                "current": {"If-Match": self.etag or '"none-yet"'},
                "stale": {"If-Match": stale},
                "any": {"If-Match": "*"},
                "create-only": {"If-None-Match": "*"},
            }[condition]

        def allowed(self, condition: str) -> bool:
            """RFC 9110 §13.1.1/§13.1.2 on the model's basket."""
            if condition in ("current", "any"):
                return self.stored
            if condition == "stale":
                return False  # an earlier ETag never names the current basket
            if condition == "create-only":
                return not self.stored
            return True

        def saved(self, resp: httpx.Response) -> None:
            etag = resp.headers["etag"]
            assert etag not in self.seen, "an ETag repeated"
            self.seen.append(etag)
            self.etag, self.stored = etag, True

        def write(self, method, path, condition, body=None, ok=(200,)) -> httpx.Response | None:
            resp = self.http.request(method, path, json=body, headers=self.headers(condition))
            if not self.allowed(condition):
                assert resp.status_code == 412, resp.text
                return None
            assert resp.status_code in ok, resp.text
            return resp

        # -- rules -----------------------------------------------------------------------
        @rule(pid=st.sampled_from(model_products), qty=st.integers(1, 60),
              condition=st.sampled_from(CONDITIONS))  # fmt: skip
        def add(self, pid, qty, condition):
            too_many = self.items.get(pid, 0) + qty > 99
            ok = (422,) if too_many else (200,)
            resp = self.write(
                "POST", "/api/basket/items", condition, {"productId": pid, "quantity": qty}, ok
            )
            if resp is not None and not too_many:
                self.items[pid] = self.items.get(pid, 0) + qty
                self.saved(resp)

        @rule(pid=st.sampled_from(model_products), qty=st.integers(1, 99),
              condition=st.sampled_from(CONDITIONS))  # fmt: skip
        def set_quantity(self, pid, qty, condition):
            present = pid in self.items
            ok = (200,) if present else (404,)
            resp = self.write("PATCH", f"/api/basket/items/{pid}", condition, {"quantity": qty}, ok)
            if resp is not None and present:
                self.items[pid] = qty
                self.saved(resp)

        @rule(pid=st.sampled_from(model_products), condition=st.sampled_from(CONDITIONS))
        def remove(self, pid, condition):
            present = pid in self.items
            resp = self.write(
                "DELETE", f"/api/basket/items/{pid}", condition, ok=(200,) if present else (404,)
            )
            if resp is not None and present:
                del self.items[pid]
                self.saved(resp)

        @rule(
            lines=st.dictionaries(st.sampled_from(model_products), st.integers(1, 99), max_size=3),
            condition=st.sampled_from(CONDITIONS),
        )
        def replace(self, lines, condition):
            body = {"items": [{"productId": p, "quantity": q} for p, q in lines.items()]}
            resp = self.write("PUT", "/api/basket", condition, body)
            if resp is not None:
                self.items = dict(lines)
                self.saved(resp)

        @rule(condition=st.sampled_from(CONDITIONS))
        def delete(self, condition):
            resp = self.write("DELETE", "/api/basket", condition, ok=(204,))
            if resp is not None:
                self.items = {}
                self.saved(resp)

        @rule(condition=st.sampled_from(CONDITIONS))
        def checkout(self, condition):
            # An empty basket that was ever checked out: 409 naming that order; never: 400.
            ok = (202,) if self.items else (409,) if self.checked_out else (400,)
            resp = self.write("POST", "/api/basket/checkout", condition, {"shipping": SHIPPING}, ok)
            if resp is not None and self.items:
                self.items = {}
                self.checked_out = True
                self.etag = self.http.get("/api/basket").headers["etag"]
                assert self.etag not in self.seen
                self.seen.append(self.etag)

        @invariant()
        def matches_the_model(self):
            resp = self.http.get("/api/basket")
            assert resp.status_code == 200
            assert quantities(resp.json()) == self.items
            assert resp.headers.get("etag") == self.etag

    run_state_machine_as_test(
        BasketMachine,
        settings=settings(max_examples=25, stateful_step_count=20, deadline=None),
    )
