"""Cookies and form tokens: the demo session, CSRF protection and one-shot messages.

The session cookie holds the user's JWT itself (HTTP-only, SameSite=Lax); the storefront checks it
with the same secret the APIs use. Forms carry a CSRF token that is an HMAC of a random per-browser
nonce (its own HTTP-only cookie) and the signed-in user's id: a page on another site can make the
browser send the cookies, but cannot read them, so it cannot produce the matching form field.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Literal

SESSION_COOKIE = "eshop_session"
CSRF_COOKIE = "eshop_csrf"
FLASH_COOKIE = "eshop_flash"
CSRF_FIELD = "csrf_token"

# What a demo user name may be: it becomes the token's `sub`, the buyer id and part of a state key.
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

FlashKind = Literal["info", "error"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def derive_key(jwt_secret: str, purpose: str) -> bytes:
    """A key for one purpose, derived from the sample's one configured secret."""
    return hmac.new(jwt_secret.encode(), f"webshop {purpose}".encode(), hashlib.sha256).digest()


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Signer:
    key: bytes

    def _mac(self, message: str) -> str:
        return _b64(hmac.new(self.key, message.encode(), hashlib.sha256).digest())

    def csrf_token(self, nonce: str, user_id: str | None) -> str:
        return self._mac(f"csrf|{nonce}|{user_id or ''}")

    def csrf_ok(self, nonce: str | None, user_id: str | None, submitted: str | None) -> bool:
        if not nonce or not submitted:
            return False
        return hmac.compare_digest(self.csrf_token(nonce, user_id), submitted)

    def flash(self, kind: FlashKind, text: str) -> str:
        payload = _b64(json.dumps([kind, text]).encode())
        return f"{payload}.{self._mac('flash|' + payload)}"

    def read_flash(self, value: str | None) -> tuple[FlashKind, str] | None:
        if not value or "." not in value:
            return None
        payload, mac = value.rsplit(".", 1)
        if not hmac.compare_digest(self._mac("flash|" + payload), mac):
            return None
        try:
            kind, text = json.loads(_unb64(payload))
        except (ValueError, TypeError):
            return None
        if kind not in ("info", "error") or not isinstance(text, str):
            return None
        return kind, text


def local_path(target: str | None, default: str = "/") -> str:
    """`target` if it is a path on this site, else `default`: no open redirects."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    if any(ord(ch) < 0x20 for ch in target):
        return default
    return target
