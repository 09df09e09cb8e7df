"""Form tokens, one-shot messages and redirect targets: the parts of the storefront that need no
stack. The pages themselves are tested in a real browser (tests/browser)."""

from __future__ import annotations

import json

import pytest

from eshop_common.sidecar import SidecarReply
from web.client import error_message
from web.rendering import money
from web.security import USER_NAME, Signer, derive_key, local_path, new_nonce

SIGNER = Signer(derive_key("a secret", "forms"))


def test_a_csrf_token_is_accepted_for_the_nonce_and_user_it_was_made_for():
    nonce = new_nonce()
    token = SIGNER.csrf_token(nonce, "alice")
    assert SIGNER.csrf_ok(nonce, "alice", token)


@pytest.mark.parametrize(
    ("nonce", "user"),
    [("another-nonce", "alice"), ("the-nonce", "bob"), ("the-nonce", None), (None, "alice")],
)
def test_a_csrf_token_is_refused_for_any_other_nonce_or_user(nonce, user):
    token = SIGNER.csrf_token("the-nonce", "alice")
    assert not SIGNER.csrf_ok(nonce, user, token)


def test_a_csrf_token_made_with_another_secret_is_refused():
    other = Signer(derive_key("another secret", "forms"))
    assert not SIGNER.csrf_ok("n", "alice", other.csrf_token("n", "alice"))
    assert not SIGNER.csrf_ok("n", "alice", None)
    assert not SIGNER.csrf_ok("n", "alice", "")


def test_keys_for_different_purposes_differ():
    assert derive_key("s", "forms") != derive_key("s", "other")


def test_a_message_survives_its_cookie_and_a_changed_one_is_ignored():
    value = SIGNER.flash("error", "Café <b>closed</b>")
    assert SIGNER.read_flash(value) == ("error", "Café <b>closed</b>")
    payload, mac = value.rsplit(".", 1)
    forged = SIGNER.flash("info", "Your account is locked")
    assert SIGNER.read_flash(f"{forged.rsplit('.', 1)[0]}.{mac}") is None
    assert SIGNER.read_flash(payload) is None
    assert SIGNER.read_flash(None) is None
    assert SIGNER.read_flash("not.base64!") is None


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/basket", "/basket"),
        ("/?brand=1&page=2", "/?brand=1&page=2"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/ok\r\nSet-Cookie: x=1", "/"),
        (None, "/"),
        ("", "/"),
    ],
)
def test_redirect_targets_stay_on_this_site(target, expected):
    assert local_path(target) == expected


@pytest.mark.parametrize("name", ["alice", "bob.smith", "a", "x@example.org", "u_1-2"])
def test_usable_user_names(name):
    assert USER_NAME.match(name)


@pytest.mark.parametrize("name", ["", " alice", "-alice", "a b", "<script>", "a" * 65, "ü"])
def test_unusable_user_names(name):
    assert not USER_NAME.match(name)


def test_money_has_two_decimals_and_thousands():
    assert money(12.5) == "$12.50"
    assert money(1234) == "$1,234.00"
    assert money(None) == ""


def reply(status: int, body: object) -> SidecarReply:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return SidecarReply(status, raw, {})


def test_an_error_message_is_the_problem_detail_or_what_dapr_said():
    problem = reply(
        400, {"type": "about:blank", "title": "Bad Request", "status": 400,
                   "detail": "Product 7 is not in the catalog."},
    )  # fmt: skip
    assert error_message("basket-api", problem) == "Product 7 is not in the catalog."
    titled = reply(409, {"title": "Conflict", "status": 409})
    assert error_message("basket-api", titled) == "The basket service answered: Conflict."
    dapr = reply(500, {"errorCode": "ERR_DIRECT_INVOKE", "message": "fail"})
    assert "could not be reached through Dapr (ERR_DIRECT_INVOKE)" in error_message(
        "catalog-api", dapr
    )
    assert error_message("catalog-api", reply(502, b"<html>")) == (
        "The catalog service answered with HTTP 502."
    )
