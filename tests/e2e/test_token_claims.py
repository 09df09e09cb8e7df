"""Correctly signed tokens with claims of the wrong type, sent to the running services.

RFC 7519 §4.1 fixes the types of `sub`, `iss`, `exp`, `nbf` and `iat` (§2: a NumericDate is a JSON
number); the sample's `role` is a string or a list of strings. RFC 8725 §3.11: a recipient
validates the claims it uses. So each API answers 401 with RFC 9457 problem details (§3.1), and the
storefront treats the session cookie as no session at all — never a 5xx or a dropped connection.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from devstack.claims import sign, valid_claims, wrong_claims
from devstack.testkit import assert_problem

# Each example is one request to a running service; the in-process test in
# services/common/tests/test_token_claims.py tries many more against the verifier itself.
STACK_EXAMPLES = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
ABSENT_ITEM = 2**31 - 1  # a delete that did get through would find nothing to remove
SESSION_COOKIE = "eshop_session"


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def test_the_base_claims_are_accepted_by_both_apis(target, http):
    token = sign(valid_claims("claims-e2e"), target.jwt_secret)
    headers = {"Authorization": f"Bearer {token}"}
    assert http.get(f"{target.basket_url}/api/basket", headers=headers).status_code == 200
    resp = http.delete(f"{target.catalog_url}/api/catalog/items/{ABSENT_ITEM}", headers=headers)
    assert_problem(resp, 404)


@STACK_EXAMPLES
@given(claims=wrong_claims())
def test_the_basket_api_answers_401_to_claims_of_the_wrong_type(target, http, claims):
    token = sign(claims, target.jwt_secret)
    resp = http.get(f"{target.basket_url}/api/basket", headers={"Authorization": f"Bearer {token}"})
    assert_problem(resp, 401)
    assert resp.headers["www-authenticate"].startswith("Bearer")


@STACK_EXAMPLES
@given(claims=wrong_claims())
def test_the_catalog_api_answers_401_to_claims_of_the_wrong_type(target, http, claims):
    token = sign(claims, target.jwt_secret)
    resp = http.delete(
        f"{target.catalog_url}/api/catalog/items/{ABSENT_ITEM}",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert_problem(resp, 401)


@STACK_EXAMPLES
@given(claims=wrong_claims())
def test_the_storefront_drops_a_session_whose_claims_have_the_wrong_type(target, http, claims):
    if target.web_url is None:
        pytest.skip("E2E_WEB_URL is not set")
    token = sign(claims, target.jwt_secret)
    resp = http.get(
        f"{target.web_url}/basket",
        headers={"Cookie": f"{SESSION_COOKIE}={token}"},
        follow_redirects=False,
    )
    assert resp.status_code < 500, resp.text
    dropped = [c for c in resp.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE)]
    assert dropped, resp.headers
    assert "Max-Age=0" in dropped[0] or 'eshop_session=""' in dropped[0], dropped
