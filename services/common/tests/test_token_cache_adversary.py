"""Adversarial tests of `TokenVerifier`'s memory of accepted tokens. The guarantee under test: a
verifier that remembers answers every token exactly as a verifier that checks it in full would,
the same user or a 401 (never another user, never an error), at any time."""

from __future__ import annotations

import time
from datetime import datetime

import jwt.api_jwt
import pytest

from devstack.claims import sign, valid_claims
from eshop_common.auth import TokenVerifier, User
from eshop_common.problems import Unauthorized

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def outcome(verifier: TokenVerifier, token: str) -> User | str:
    try:
        return verifier.verify(token)
    except Unauthorized as exc:
        return f"401 {exc.detail}"


def _sleep_until(moment: float) -> None:
    while (left := moment - time.time()) > 0:
        time.sleep(left)


def test_a_fractional_exp_is_served_from_memory_after_a_full_check_refuses_it():
    """RFC 7519 §2 lets `exp` have a fraction; PyJWT compares `int(exp) <= now - leeway`, the
    memory compares `now < exp + leeway` with the fraction kept. For the last fraction of a
    second the two disagree: a fresh verifier says 401 expired, the remembering one a user.
    Real clock, default leeway (5 s), no mocks."""
    whole = int(time.time()) - 4  # int(exp) + leeway = the next whole second: valid now
    token = sign(valid_claims("alice") | {"exp": whole + 0.99}, SECRET)
    remembering = TokenVerifier(SECRET)
    assert remembering.verify(token).id == "alice"  # remembered while both agree
    _sleep_until(whole + 5 + 0.05)  # past int(exp) + leeway, before exp + leeway
    full = outcome(TokenVerifier(SECRET), token)
    assert full == "401 The bearer token has expired."  # the control: the full check refuses
    assert outcome(remembering, token) == full


def test_an_exp_beyond_float_range_is_an_error_not_a_user_or_401():
    """A correctly signed token whose `exp` is an integer too big for a float (JSON numbers have
    no size limit, RFC 8259 §6; `Claims` takes any StrictInt and PyJWT's int() takes it too) now
    raises OverflowError from `float(claims.exp)`: a 500. Before the change the same verifier
    returned the user; RFC 8725 §3.11 / the sample's rule: any token is a user or a 401."""
    token = sign(valid_claims("alice") | {"exp": 10**400}, SECRET)
    assert outcome(TokenVerifier(SECRET), token) in (
        User(id="alice", roles=frozenset({"admin"})),
        "401 The bearer token's claims have the wrong type or size: exp.",
    )


class _Clock:
    """One wall clock for both PyJWT (datetime.now) and the memory (time.time)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, now: float) -> None:
        self.now = now
        clock = self

        class _DateTime(datetime):
            @classmethod
            def now(cls, tz=None):  # type: ignore[override]
                return datetime.fromtimestamp(clock.now, tz)

        monkeypatch.setattr(jwt.api_jwt, "datetime", _DateTime)
        monkeypatch.setattr(time, "time", lambda: clock.now)


def test_a_remembered_token_is_served_after_the_wall_clock_steps_back(monkeypatch):
    """The memory assumes `nbf` and `iat` can only go from invalid to valid: true only while the
    wall clock never steps back (NTP step, VM resume, an operator's `date -s`). After a step back
    a full check says 401 not yet valid (RFC 7519 §4.1.5) and the memory still says the user."""
    start = float(int(time.time()))
    clock = _Clock(monkeypatch, start)
    claims = valid_claims("alice") | {"nbf": int(start) + 4, "iat": int(start) + 4}
    token = sign(claims, SECRET)
    remembering = TokenVerifier(SECRET)
    assert remembering.verify(token).id == "alice"  # within the 5 s leeway of nbf
    clock.now = start - 60  # the wall clock is corrected back a minute
    full = outcome(TokenVerifier(SECRET), token)
    assert full.startswith("401 The bearer token is not valid: The token is not yet valid")
    assert outcome(remembering, token) == full
