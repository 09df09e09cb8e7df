"""Who is asking, and how every answer is made: templates, redirects, cookies, messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from eshop_common.auth import TokenVerifier, User
from eshop_common.problems import Unauthorized
from web.client import Backends
from web.config import Settings
from web.security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    FLASH_COOKIE,
    SESSION_COOKIE,
    FlashKind,
    Signer,
    new_nonce,
)

FLASH_MAX = 500

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


def money(value: Decimal | float | int | None) -> str:
    if value is None:
        return ""
    return f"${Decimal(value):,.2f}"


templates.env.filters["money"] = money


class SignInRequired(Exception):
    """The page belongs to a signed-in user; the visitor is sent to sign in first."""


class AdminRequired(Exception):
    """The page needs the admin role."""


class CsrfRejected(Exception):
    """A form came without the token of this browser's session."""


@dataclass
class Visitor:
    """The person behind a request: their demo identity (if any) and their browser's cookies."""

    user: User | None
    token: str | None
    nonce: str
    csrf_token: str
    new_nonce: bool = False
    drop_session: bool = False
    flash: tuple[FlashKind, str] | None = None
    had_flash: bool = False
    cookies: list[tuple[str, str, int | None]] = field(default_factory=list)

    @property
    def signed_in(self) -> bool:
        return self.user is not None


def settings_of(request: Request) -> Settings:
    settings: Settings = request.state.settings
    return settings


def signer_of(request: Request) -> Signer:
    signer: Signer = request.state.signer
    return signer


async def get_backends(request: Request) -> Backends:
    backends: Backends = request.state.backends
    return backends


def visitor_of(request: Request) -> Visitor:
    """Read once per request: the session cookie's token checked, the CSRF nonce found or made."""
    cached = getattr(request.state, "visitor", None)
    if isinstance(cached, Visitor):
        return cached
    signer = signer_of(request)
    user = token = None
    drop = False
    if raw := request.cookies.get(SESSION_COOKIE):
        verifier: TokenVerifier = request.app.state.token_verifier
        try:
            user, token = verifier.verify(raw), raw
        except Unauthorized:
            drop = True
    nonce = request.cookies.get(CSRF_COOKIE)
    fresh = not nonce or len(nonce) > 64
    if fresh:
        nonce = new_nonce()
    assert nonce is not None
    flash_cookie = request.cookies.get(FLASH_COOKIE)
    visitor = Visitor(
        user=user,
        token=token,
        nonce=nonce,
        csrf_token=signer.csrf_token(nonce, user.id if user else None),
        new_nonce=fresh,
        drop_session=drop,
        flash=signer.read_flash(flash_cookie),
        had_flash=flash_cookie is not None,
    )
    request.state.visitor = visitor
    return visitor


async def get_visitor(request: Request) -> Visitor:
    return visitor_of(request)


async def get_signed_in(visitor: Annotated[Visitor, Depends(get_visitor)]) -> Visitor:
    if visitor.user is None:
        raise SignInRequired
    return visitor


async def get_admin(visitor: Annotated[Visitor, Depends(get_signed_in)]) -> Visitor:
    assert visitor.user is not None
    if not visitor.user.is_admin:
        raise AdminRequired
    return visitor


async def check_csrf(request: Request) -> None:
    """For every form post: the hidden field must match this browser's nonce and user."""
    visitor = visitor_of(request)
    form = await request.form()
    submitted = form.get(CSRF_FIELD)
    nonce = None if visitor.new_nonce else visitor.nonce
    user_id = visitor.user.id if visitor.user else None
    if not signer_of(request).csrf_ok(
        nonce, user_id, submitted if isinstance(submitted, str) else None
    ):
        raise CsrfRejected


BackendsDep = Annotated[Backends, Depends(get_backends)]
VisitorDep = Annotated[Visitor, Depends(get_visitor)]
SignedInDep = Annotated[Visitor, Depends(get_signed_in)]
AdminDep = Annotated[Visitor, Depends(get_admin)]
CsrfChecked = Depends(check_csrf)


def _finish(request: Request, visitor: Visitor, response: Response) -> Response:
    settings = settings_of(request)
    secure = settings.cookie_secure
    if visitor.new_nonce:
        response.set_cookie(
            CSRF_COOKIE, visitor.nonce, httponly=True, samesite="lax", secure=secure, path="/"
        )
    if visitor.drop_session:
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    for name, value, max_age in visitor.cookies:
        response.set_cookie(
            name, value, max_age=max_age, httponly=True, samesite="lax", secure=secure, path="/"
        )
    return response


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> Response:
    visitor = visitor_of(request)
    response = templates.TemplateResponse(
        request,
        name,
        {"visitor": visitor, "csrf_token": visitor.csrf_token, "flash": visitor.flash,
         **(context or {})},
        status_code=status_code,
    )  # fmt: skip
    # Pages are per user (basket, sign-in state): never from a shared or back-button cache.
    response.headers["Cache-Control"] = "no-store"
    if visitor.had_flash:
        response.delete_cookie(FLASH_COOKIE, path="/", httponly=True, samesite="lax")
    return _finish(request, visitor, response)


def redirect(request: Request, url: str, flash: tuple[FlashKind, str] | None = None) -> Response:
    """303 See Other after a form post, with a one-shot message for the next page."""
    visitor = visitor_of(request)
    response: Response = RedirectResponse(url, status_code=303)
    if flash is not None:
        kind, text = flash
        visitor.cookies.append((FLASH_COOKIE, signer_of(request).flash(kind, text[:FLASH_MAX]), 60))
    return _finish(request, visitor, response)


def sign_in_response(request: Request, token: str, url: str, message: str) -> Response:
    visitor = visitor_of(request)
    settings = settings_of(request)
    visitor.drop_session = False
    visitor.cookies.append((SESSION_COOKIE, token, settings.session_hours * 3600))
    return redirect(request, url, ("info", message))


def sign_out_response(request: Request, url: str) -> Response:
    visitor = visitor_of(request)
    visitor.drop_session = True
    return redirect(request, url, ("info", "Signed out."))
