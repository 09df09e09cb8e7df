"""`TokenVerifier` remembers the tokens it accepted, so a client's next request with the same token
skips PyJWT's checks. The guarantee: a verifier that remembers answers every token exactly as one
that checks each token in full would, the same user or the same 401 (RFC 7519 §7.2, RFC 8725
§3.1), including once a remembered token has expired (RFC 7519 §4.1.4)."""

from __future__ import annotations

import threading
import time
from datetime import datetime

import jwt
import jwt.api_jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.claims import sign, valid_claims
from eshop_common.auth import TokenVerifier, User
from eshop_common.problems import Unauthorized

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
OTHER_SECRET = "another-secret-that-is-long-enough-for-hs256"


def outcome(verifier: TokenVerifier, token: str) -> User | str:
    try:
        return verifier.verify(token)
    except Unauthorized as exc:
        return f"401 {exc.detail}"


def _tokens() -> list[str]:
    now = time.time()
    good = [sign(valid_claims(user, admin=user == "admin"), SECRET) for user in ("a", "b", "admin")]
    return [
        *good,
        sign(valid_claims("a"), OTHER_SECRET),  # another issuer's key
        sign(valid_claims("a") | {"exp": now - 60}, SECRET),  # expired
        sign(valid_claims("a") | {"nbf": now + 600}, SECRET),  # not yet valid
        sign(valid_claims("a") | {"iss": "someone-else"}, SECRET),
        "not-a-token",
        "",
    ]


def _spoiled(token: str, data: st.DataObject) -> str:
    """`token` with one character replaced, dropped or added: anywhere, or where a check is most
    likely to cut corners (its last characters, beside the dots between its three parts)."""
    dots = [i for i, c in enumerate(token) if c == "."]
    edges = [*dots, *(d + 1 for d in dots), *range(len(token) - 4, len(token))]
    anywhere = data.draw(st.integers(0, 1000)) % max(len(token), 1)
    at = data.draw(st.sampled_from([anywhere, *[e for e in edges if 0 <= e < len(token)]]))
    char = data.draw(st.sampled_from("AQgw_-.=0z"))
    how = data.draw(st.sampled_from(["replace", "drop", "add"]))
    if how == "replace":
        return token[:at] + char + token[at + 1 :]
    if how == "drop":
        return token[:at] + token[at + 1 :]
    return token[:at] + char + token[at:]


# Made once: drawn from, a list that changed between examples would make hypothesis's replays
# draw differently.
TOKENS = _tokens()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_remembering_verifier_answers_as_a_full_check_does(data):
    """Any sequence of tokens, good ones, refused ones and one-character changes of either
    (whose signature may or may not still match: base64url's last character has spare bits),
    against a verifier that remembers and one made afresh for every token."""
    tokens = TOKENS
    remembering = TokenVerifier(SECRET)
    for _ in range(data.draw(st.integers(1, 12))):
        token = data.draw(st.sampled_from(tokens))
        if data.draw(st.booleans()):  # a changed copy of a token this verifier may have seen
            token = _spoiled(token, data)
        assert outcome(remembering, token) == outcome(TokenVerifier(SECRET), token)


def test_the_same_token_again_skips_pyjwt(monkeypatch):
    """What the cache is for: the second request with a token does not decode it again."""
    verifier = TokenVerifier(SECRET)
    token = sign(valid_claims("alice"), SECRET)
    calls = []
    decode = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: calls.append(1) or decode(*a, **k))
    assert verifier.verify(token).id == "alice"
    assert verifier.verify(token).id == "alice"
    assert len(calls) == 1


def test_a_remembered_token_is_refused_once_it_expires():
    """RFC 7519 §4.1.4: not accepted on or after `exp` (plus the leeway, here 0). The token is
    still remembered when it is refused (the control below), so the refusal comes from the
    expiry check on the remembered entry."""
    verifier = TokenVerifier(SECRET, leeway_seconds=0)
    token = sign(valid_claims("alice") | {"exp": time.time() + 1.0}, SECRET)
    assert verifier.verify(token).id == "alice"
    time.sleep(1.1)
    assert token in verifier._verified  # the control: what a cache without the check would serve
    with pytest.raises(Unauthorized, match="expired"):
        verifier.verify(token)


def test_refused_and_oversized_tokens_are_not_remembered():
    verifier = TokenVerifier(SECRET)
    for token in TOKENS[3:]:
        outcome(verifier, token)
    padded = valid_claims("alice") | {"pad": "x" * TokenVerifier.CACHED_TOKEN_MAX}
    big = sign(padded, SECRET)
    assert verifier.verify(big).id == "alice"
    assert len(verifier._verified) == 0


def test_the_cache_keeps_at_most_its_bound():
    verifier = TokenVerifier(SECRET)
    for n in range(TokenVerifier.VERIFIED_KEPT + 50):
        verifier.verify(sign(valid_claims(f"user-{n}"), SECRET))
    assert len(verifier._verified) == TokenVerifier.VERIFIED_KEPT


def test_threads_sharing_a_verifier_each_get_their_own_user():
    """Sync routes run on a thread pool: a verifier shared by threads, with a cache small enough
    to evict all the time, still gives every token its own user."""
    verifier = TokenVerifier(SECRET)
    verifier._verified = type(verifier._verified)(8)
    tokens = {f"user-{n}": sign(valid_claims(f"user-{n}"), SECRET) for n in range(40)}
    wrong: list[tuple[str, str]] = []
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(400):
                user = f"user-{(i + offset) % len(tokens)}"
                got = verifier.verify(tokens[user]).id
                if got != user:
                    wrong.append((user, got))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n * 7,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert not wrong


def _sleep_until(moment: float) -> None:
    while (left := moment - time.time()) > 0:
        time.sleep(left)


def test_a_fractional_exp_is_judged_as_pyjwt_judges_it():
    """RFC 7519 §2 lets `exp` have a fraction; PyJWT compares `int(exp) <= now - leeway`. The
    memory compared `now < exp + leeway` with the fraction kept, so for the last fraction of a
    second a fresh verifier said 401 expired and the remembering one a user (found by an
    adversarial review). Real clock, default leeway (5 s), no mocks."""
    whole = int(time.time()) - 4  # int(exp) + leeway = the next whole second: valid now
    token = sign(valid_claims("alice") | {"exp": whole + 0.99}, SECRET)
    remembering = TokenVerifier(SECRET)
    assert remembering.verify(token).id == "alice"  # remembered while both agree
    _sleep_until(whole + 5 + 0.05)  # past int(exp) + leeway, before exp + leeway
    full = outcome(TokenVerifier(SECRET), token)
    assert full == "401 The bearer token has expired."  # the control: the full check refuses
    assert outcome(remembering, token) == full


def test_an_exp_beyond_float_range_is_a_user_or_401_never_an_error():
    """A correctly signed token whose `exp` is an integer too big for a float (JSON numbers have
    no size limit, RFC 8259 §6; `Claims` takes any StrictInt and PyJWT's int() takes it too)
    raised OverflowError from a `float(claims.exp)`: a 500. Any token is a user or a 401."""
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


def test_a_remembered_token_is_refused_after_the_wall_clock_steps_back(monkeypatch):
    """`nbf` and `iat` go from invalid to valid only while the wall clock never steps back (NTP
    step, VM resume, an operator's `date -s`). After a step back a full check says 401 not yet
    valid (RFC 7519 §4.1.5), and so must the memory."""
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


_SECONDS = st.integers(-20, 20)
_MOMENT = _SECONDS | st.floats(-20, 20, allow_nan=False).map(lambda t: round(t, 2))


@settings(max_examples=300, deadline=None)
@given(
    exp=_MOMENT,
    nbf=st.none() | _MOMENT,
    iat=st.none() | _MOMENT,
    leeway=st.integers(0, 6),
    steps=st.lists(_MOMENT, min_size=1, max_size=6),
)
def test_at_any_time_the_memory_agrees_with_a_full_check(exp, nbf, iat, leeway, steps):
    """Generated times around now, whole and fractional, `nbf` and `iat` present or not, and
    a wall clock that moves forward or back between requests: at every step the remembering
    verifier answers as a fresh one (RFC 7519 §4.1.4, §4.1.5)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        start = float(int(time.time()))
        clock = _Clock(monkeypatch, start)
        claims = valid_claims("alice") | {"exp": start + exp}
        for name, moment in (("nbf", nbf), ("iat", iat)):
            if moment is None:
                claims.pop(name, None)
            else:
                claims[name] = start + moment
        token = sign(claims, SECRET)
        remembering = TokenVerifier(SECRET, leeway_seconds=leeway)
        for step in [0, *steps]:
            clock.now = start + step
            fresh = outcome(TokenVerifier(SECRET, leeway_seconds=leeway), token)
            assert outcome(remembering, token) == fresh, f"at {step:+} s"
