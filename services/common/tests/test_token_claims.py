"""Every service checks bearer tokens with `TokenVerifier`: a correctly signed token whose claims
have the wrong type (RFC 7519 §2, §4.1) is refused with 401, never an error (RFC 8725 §3.11).
tests/e2e/test_token_claims.py sends the same tokens to the running services."""

from __future__ import annotations

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.claims import WRONG, sign, valid_claims, wrong_claims
from eshop_common.auth import ISSUER, TokenVerifier
from eshop_common.problems import Unauthorized

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
VERIFIER = TokenVerifier(SECRET)


def test_the_base_claims_are_accepted():
    user = VERIFIER.verify(sign(valid_claims("alice"), SECRET))
    assert user.id == "alice"
    assert user.is_admin


@pytest.mark.parametrize("role", ["admin", ["admin"], ["reader", "admin"]])
def test_a_role_is_a_string_or_a_list_of_strings(role):
    claims = valid_claims() | {"role": role}
    assert VERIFIER.verify(sign(claims, SECRET)).is_admin


def test_numeric_dates_may_have_fractions():
    # RFC 7519 §2: a NumericDate is a JSON numeric value, "non-integer values can be represented".
    claims = valid_claims()
    claims["exp"] += 0.5
    assert VERIFIER.verify(sign(claims, SECRET)).id == "claims-test"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wrong_claims())
def test_claims_of_any_wrong_type_are_refused_as_unauthorized(claims):
    with pytest.raises(Unauthorized):
        VERIFIER.verify(sign(claims, SECRET))


@pytest.mark.parametrize(
    ("claim", "value"),
    [("role", None), ("role", 1), ("role", True), ("exp", "99999999999"), ("nbf", "0")],
)
def test_control_pyjwt_alone_lets_these_claims_through(claim, value):
    """Without the `Claims` model the token passes PyJWT's checks, and a role of `null`, `1` or
    `true` reached code that iterated over it: the 500 of issue 11, item 8."""
    claims = valid_claims() | {claim: value}
    token = sign(claims, SECRET)
    decoded = jwt.decode(
        token, SECRET, algorithms=["HS256"], issuer=ISSUER, options={"require": ["sub", "exp"]}
    )
    assert decoded[claim] == value
    with pytest.raises(Unauthorized):
        VERIFIER.verify(token)


@pytest.mark.parametrize("claim", sorted(WRONG))
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_each_claim_alone_of_the_wrong_type_is_refused(claim, data):
    claims = valid_claims() | {claim: data.draw(WRONG[claim])}
    with pytest.raises(Unauthorized):
        VERIFIER.verify(sign(claims, SECRET))
