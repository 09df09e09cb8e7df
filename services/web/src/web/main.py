"""The storefront: FastAPI app, lifespan (one client to the sidecar) and its error pages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypedDict
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from eshop_common import health, telemetry
from eshop_common.app import configure_logging
from eshop_common.auth import TokenVerifier
from eshop_common.problems import ServiceUnavailable, install_problem_handlers
from web import pages
from web.client import BackendError, Backends, make_sidecar
from web.config import Settings
from web.rendering import AdminRequired, CsrfRejected, SignInRequired, redirect, render
from web.security import Signer, derive_key

settings = Settings()

# Pages use only what this app serves: no inline script, no CDN, no framing by other sites.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


class State(TypedDict):
    settings: Settings
    backends: Backends
    signer: Signer


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[State]:
    signer = Signer(derive_key(settings.jwt_secret.get_secret_value(), "forms"))
    async with make_sidecar(settings) as sidecar:
        yield {"settings": settings, "backends": Backends(sidecar, settings), "signer": signer}


async def readiness(request: Request) -> None:
    backends: Backends = request.state.backends
    if not await backends.sidecar_ready():
        raise ServiceUnavailable("The storefront's Dapr sidecar is not ready.")


def error_page(request: Request, status: int, title: str, message: str) -> Response:
    return render(request, "error.html", {"title": title, "message": message}, status)


async def on_backend_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BackendError)
    titles = {401: "Please sign in again", 403: "Not allowed", 404: "Not found"}
    title = titles.get(exc.status, "Something is not available")
    return error_page(request, exc.status, title, exc.message)


async def on_sign_in_required(request: Request, _: Exception) -> Response:
    if request.method == "GET":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return redirect(request, f"/signin?next={quote(target, safe='')}")
    return redirect(request, "/signin", ("error", "Please sign in first."))


async def on_admin_required(request: Request, _: Exception) -> Response:
    message = "This page is for admins: sign in again with the admin switch on."
    return error_page(request, 403, "Admins only", message)


async def on_csrf_rejected(request: Request, _: Exception) -> Response:
    message = (
        "The form did not come from a page of this storefront, or it is from an earlier "
        "sign-in. Go back, reload the page and try again."
    )
    return error_page(request, 403, "The form has expired", message)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        return error_page(request, 404, "Not found", "There is no page at this address.")
    return error_page(request, exc.status_code, "That did not work", str(exc.detail))


async def on_invalid_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    fields = ", ".join(str(err["loc"][-1]) for err in exc.errors() if err.get("loc"))
    message = f"Part of the address or form is not valid ({fields}). Go back and try again."
    return error_page(request, 400, "That did not work", message)


async def on_unexpected(request: Request, _: Exception) -> Response:
    # eshop_common's UnexpectedErrors has logged it, and keeps the connection open.
    message = "Something unexpected went wrong. It has been logged; please try again."
    return error_page(request, 500, "Something went wrong", message)


def create_web_app() -> FastAPI:
    configure_logging(settings.log_level)
    app = FastAPI(
        title="eShop storefront",
        description="Server-rendered pages over the catalog and basket, through Dapr.",
        version="1.0.0",
        lifespan=lifespan,
        # A browser app: no API docs (their UI loads from a CDN, which the pages never do).
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.token_verifier = TokenVerifier(settings.jwt_secret.get_secret_value())
    app.state.readiness_check = readiness
    # Problems (from /readyz) stay JSON for probes; everything a person sees is a page.
    install_problem_handlers(app)
    app.add_exception_handler(BackendError, on_backend_error)
    app.add_exception_handler(SignInRequired, on_sign_in_required)
    app.add_exception_handler(AdminRequired, on_admin_required)
    app.add_exception_handler(CsrfRejected, on_csrf_rejected)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_invalid_request)
    app.add_exception_handler(Exception, on_unexpected)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    app.include_router(health.router)
    app.include_router(pages.router)
    telemetry.install(app, "webshop")
    return app


app = create_web_app()
