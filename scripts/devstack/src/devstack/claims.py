"""Correctly signed tokens whose claims have types no issuer should send, for property tests.

RFC 7519 §4.1 gives each registered claim its type: `sub` and `iss` are strings (StringOrURI),
`exp`, `nbf` and `iat` are NumericDates (JSON numbers, §2). The sample's own `role` is a string or
a list of strings. RFC 8725 §3.11 asks a recipient to validate every claim it uses, so each token
made here must be refused with 401, whichever claim is wrong and however.
"""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import strategies as st
from jwt.api_jws import PyJWS

from eshop_common.auth import ALGORITHM, ISSUER, ROLE_MAX, ROLES_MAX, SUBJECT_MAX

CLAIMS = ("role", "sub", "exp", "iat", "nbf", "iss")
HUGE_MAX = 10_000  # characters; a bigger token no longer fits in one request header line

_json_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
_json = st.recursive(
    _json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
_not_a_string = _json.filter(lambda value: not isinstance(value, str))


def _huge(min_size: int) -> st.SearchStrategy[str]:
    return st.integers(min_size, HUGE_MAX).map(lambda n: "x" * n)


def _not_a_number(value: Any) -> bool:
    return isinstance(value, bool) or not isinstance(value, int | float)


# For each claim, values of the wrong type or beyond the size the services accept.
WRONG: dict[str, st.SearchStrategy[Any]] = {
    "sub": _not_a_string | _huge(SUBJECT_MAX + 1) | st.sampled_from(["", " ", "\t", "a\x00b"]),
    "iss": _not_a_string | _huge(len(ISSUER) + 1),
    "exp": _json.filter(_not_a_number) | st.integers(0, 2**40).map(str),
    "iat": _json.filter(_not_a_number) | st.integers(0, 2**40).map(str),
    "nbf": _json.filter(_not_a_number) | st.integers(0, 2**40).map(str),
    "role": (
        _not_a_string.filter(
            lambda v: not (isinstance(v, list) and all(isinstance(r, str) for r in v))
        )
        | _huge(ROLE_MAX + 1)
        | st.lists(st.just("admin"), min_size=ROLES_MAX + 1, max_size=ROLES_MAX + 5)
        | st.lists(st.just("admin") | _not_a_string, min_size=1, max_size=4).filter(
            lambda v: not all(isinstance(r, str) for r in v)
        )
    ),
}


def valid_claims(sub: str = "claims-test", *, admin: bool = True) -> dict[str, Any]:
    """Claims the services accept: the base that `wrong_claims` spoils."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iss": ISSUER, "iat": now, "nbf": now, "exp": now + 600}
    if admin:
        claims["role"] = "admin"
    return claims


@st.composite
def wrong_claims(draw: st.DrawFn) -> dict[str, Any]:
    """Valid claims with one or more of `CLAIMS` replaced by a value of the wrong type or size."""
    claims = valid_claims()
    spoiled = draw(st.sets(st.sampled_from(CLAIMS), min_size=1, max_size=3))
    for name in sorted(spoiled):
        claims[name] = draw(WRONG[name])
    return claims


def sign(claims: dict[str, Any], secret: str) -> str:
    """An HS256 JWS over exactly these claims. PyJWT's `jwt.encode` refuses some of them (a
    non-string `iss`), so the payload is serialised here and only the signing is PyJWT's."""
    payload = json.dumps(claims, separators=(",", ":")).encode()
    return PyJWS().encode(payload, secret, algorithm=ALGORITHM, headers={"typ": "JWT"})
