"""`TokenVerifier` remembers the tokens it accepted, so a client's next request with the same token
skips PyJWT's checks. The guarantee: a verifier that remembers answers every token exactly as one
that checks each token in full would, the same user or the same 401 (RFC 7519 §7.2, RFC 8725
§3.1), including once a remembered token has expired (RFC 7519 §4.1.4)."""

from __future__ import annotations

import threading
import time

import jwt
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
