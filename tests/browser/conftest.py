"""A real browser (Debian's Chromium, driven by Playwright) against the storefront.

    make test                                   # the local stack from dapr.yaml, webshop included
    E2E_WEB_URL=http://localhost:5100 E2E_CATALOG_URL=http://localhost:5101 \\
        uv run pytest tests/browser             # against `docker compose up`

Screenshots of the main pages go to docs/screenshots/, which the README shows: every run
takes them again, so they always show the storefront as it is.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from devstack.stack import DEMO_JWT_SECRET, REPO_ROOT
from eshop_common.auth import mint_token

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
VIEWPORT = {"width": 1280, "height": 860}
TIMEOUT_MS = 20_000


@dataclass
class Storefront:
    web_url: str
    catalog_url: str
    jwt_secret: str

    def catalog_admin(self) -> httpx.Client:
        """The catalog API with an admin token, for test data the pages don't create."""
        token = mint_token(self.jwt_secret, "browser-test-admin", admin=True)
        return httpx.Client(
            base_url=self.catalog_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def new_product(
        self, *, name: str | None = None, price: float = 10.0, stock: int = 25
    ) -> dict[str, Any]:
        """A catalog item of the test's own, so no other test's prices move under it."""
        with self.catalog_admin() as admin:
            brand = admin.get("/api/catalog/brands").json()[0]
            kind = admin.get("/api/catalog/types").json()[0]
            resp = admin.post(
                "/api/catalog/items",
                json={
                    "name": name or f"Browser test lantern {uuid.uuid4().hex[:10]}",
                    "description": "Made by a browser test.",
                    "price": price,
                    "pictureFileName": "northwind-camp-lantern.svg",
                    "catalogBrandId": brand["id"],
                    "catalogTypeId": kind["id"],
                    "availableStock": stock,
                },
            )
        assert resp.status_code == 201, resp.text
        item: dict[str, Any] = resp.json()
        return item

    @staticmethod
    def sign_in(page: Page, user: str, *, admin: bool = False) -> None:
        """Through the demo sign-in page, as a person would."""
        page.goto("/signin")
        page.get_by_label("User name").fill(user)
        if admin:
            page.get_by_label("Admin").check()
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_test_id("user-name")).to_have_text(user)

    @staticmethod
    def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page, animations="disabled")
        return path


@pytest.fixture(scope="session")
def storefront(request: pytest.FixtureRequest) -> Storefront:
    secret = os.environ.get("JWT_SECRET", DEMO_JWT_SECRET)
    web_url, catalog_url = os.environ.get("E2E_WEB_URL"), os.environ.get("E2E_CATALOG_URL")
    if web_url and catalog_url:
        return Storefront(web_url.rstrip("/"), catalog_url.rstrip("/"), secret)
    stack = request.getfixturevalue("stack")
    return Storefront(stack.url("webshop"), stack.url("catalog-api"), secret)


# Per module, not per session: while Playwright's sync API is open it keeps an asyncio loop running
# on this thread, and other tests' asyncio.run() would fail.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} not found: `make prerequisites` installs Debian's chromium")
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
    )
    yield browser
    browser.close()


@pytest.fixture
def new_page(browser: Browser, storefront: Storefront) -> Iterator[Callable[[], Page]]:
    """A page in a browser context of its own: its own cookies, as another person's browser."""
    contexts: list[BrowserContext] = []

    def make() -> Page:
        context = browser.new_context(base_url=storefront.web_url, viewport=VIEWPORT)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    expect.set_options(timeout=TIMEOUT_MS)
    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page: Callable[[], Page]) -> Page:
    return new_page()
