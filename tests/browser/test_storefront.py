"""The storefront as a person uses it: a real browser signs in, browses, fills a basket, checks
out; a second person in another browser; an admin who changes a price; forms and errors."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from decimal import Decimal

from playwright.sync_api import Locator, Page, expect

from devstack.testkit import unique_user

SHIPPING = {
    "Full name": "Ada Lovelace",
    "Street and number": "12 Example Road",
    "City": "Springfield",
    "Postal code": "12345",
    "Country": "Utopia",
}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def money(text: str) -> Decimal:
    return Decimal(text.strip().removeprefix("$").replace(",", ""))


def card_names(page: Page) -> list[str]:
    return page.locator("li.card h2").all_inner_texts()


def basket_rows(page: Page) -> Locator:
    return page.locator("table.basket tbody tr")


def add_from_card(page: Page, card: Locator) -> str:
    name = card.locator("h2").inner_text()
    card.get_by_role("button", name="Add to basket").click()
    expect(page.locator(".flash.info")).to_contain_text(f" of {name} to your basket")
    return name


def fill_shipping(page: Page) -> None:
    for label, value in SHIPPING.items():
        page.get_by_label(label).fill(value)


def test_a_shopper_signs_in_filters_searches_fills_the_basket_and_checks_out(page, storefront):
    user = unique_user("shopper")
    page.goto("/signin")
    expect(page.get_by_test_id("demo-idp")).to_contain_text("This is a demo identity provider")
    storefront.screenshot(page, "signin")
    storefront.sign_in(page, user)

    # The catalog: a page of pictures, then filters, search and paging.
    expect(page.locator("li.card")).to_have_count(12)
    expect(page.locator("li.card img").first).to_have_js_property("complete", True)
    assert page.locator("li.card img").first.evaluate("img => img.naturalWidth") > 0
    storefront.screenshot(page, "catalog")
    first_page = card_names(page)

    brand = page.get_by_label("Brand").locator("option").nth(1).inner_text()
    page.get_by_label("Brand").select_option(label=brand)
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"brand=\d+"))
    brands = page.locator("li.card .brand-name").all_inner_texts()
    assert brands
    assert set(brands) == {brand}

    page.get_by_role("link", name="Clear").click()
    kind = page.get_by_label("Type").locator("option").nth(2).inner_text()
    page.get_by_label("Type").select_option(label=kind)
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"type=\d+"))
    metas = page.locator("li.card .meta").all_inner_texts()
    assert metas
    assert all(meta.endswith(f"· {kind}") for meta in metas), metas

    page.get_by_role("link", name="Clear").click()
    page.get_by_label("Search").fill("tent")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"q=tent"))
    expect(page.get_by_label("Search")).to_have_value("tent")
    found = card_names(page)
    assert found
    assert all("tent" in name.lower() for name in found), found

    page.get_by_role("link", name="Clear").click()
    page.get_by_role("link", name="Next").click()
    expect(page.locator(".pager .where")).to_contain_text("Page 2 of")
    assert set(card_names(page)).isdisjoint(first_page)

    # Two products from the grid, a third from its own page.
    page.goto("/")
    cards = page.locator("li.card")
    first = add_from_card(page, cards.nth(0))
    second = add_from_card(page, cards.nth(1))
    cards.nth(2).locator("h2 a").click()
    third = page.locator("h1").inner_text()
    page.get_by_label("Quantity").fill("2")
    page.get_by_role("button", name="Add to basket").click()
    expect(page.locator(".flash.info")).to_contain_text(f"Added 2 of {third}")
    storefront.screenshot(page, "product")

    # The basket: quantities, removal, subtotal, and the state entry behind it.
    page.get_by_role("navigation", name="main").get_by_role("link", name="Basket").click()
    rows = basket_rows(page)
    expect(rows).to_have_count(3)
    expect(page.get_by_test_id("state-key")).to_have_text(f"basket-api||{user}")
    etag_before = page.get_by_test_id("etag").inner_text()
    assert re.fullmatch(r'"[^"]+"', etag_before), etag_before

    rows.filter(has_text=first).get_by_role("spinbutton").fill("3")
    rows.filter(has_text=first).get_by_role("button", name="Update").click()
    expect(page.locator(".flash.info")).to_have_text("Quantity changed to 3.")
    expect(page.get_by_test_id("etag")).not_to_have_text(etag_before)
    expect(page.get_by_test_id("stored-json")).to_contain_text('"quantity": 3')

    rows.filter(has_text=third).get_by_role("button", name="Remove").click()
    expect(page.locator(".flash.info")).to_have_text("Removed from your basket.")
    expect(rows).to_have_count(2)
    assert [rows.nth(i).locator("td").nth(1).inner_text() for i in range(2)] == [first, second]
    quantities = [int(rows.nth(i).get_by_role("spinbutton").input_value()) for i in range(2)]
    assert quantities == [3, 1]
    prices = [money(rows.nth(i).locator(".unit").inner_text()) for i in range(2)]
    expected = sum((p * q for p, q in zip(prices, quantities, strict=True)), Decimal(0))
    assert money(page.get_by_test_id("subtotal").inner_text()) == expected
    stored = page.get_by_test_id("stored-json").inner_text()
    assert f'"buyerId": "{user}"' in stored
    storefront.screenshot(page, "basket")

    # Checkout, then an empty basket.
    page.get_by_role("link", name="Check out").click()
    fill_shipping(page)
    storefront.screenshot(page, "checkout")
    page.get_by_role("button", name="Place order").click()
    expect(page.get_by_test_id("checkout-done")).to_contain_text("has been accepted")
    assert UUID.match(page.get_by_test_id("request-id").inner_text())
    # The page looks again until the catalog has answered.
    expect(page.get_by_test_id("checkout-status")).to_have_attribute("data-status", "reserved")
    storefront.screenshot(page, "checkout-done")
    page.get_by_role("link", name="See your basket").click()
    expect(page.get_by_test_id("basket-empty")).to_be_visible()


def test_a_checkout_the_catalog_cannot_supply_says_why_and_gives_the_items_back(page, storefront):
    scarce = storefront.new_product(stock=1)
    storefront.sign_in(page, unique_user("unlucky"))
    page.goto(f"/items/{scarce['id']}")
    page.get_by_label("Quantity").fill("3")
    page.get_by_role("button", name="Add to basket").click()
    page.goto("/checkout")
    fill_shipping(page)
    page.get_by_role("button", name="Place order").click()

    status = page.get_by_test_id("checkout-status")
    expect(status).to_have_attribute("data-status", "rejected")
    expect(status).to_contain_text(f"{scarce['name']}: you asked for 3, 1 left.")
    storefront.screenshot(page, "checkout-rejected")
    page.get_by_test_id("returned").get_by_role("link", name="your basket").click()
    expect(basket_rows(page)).to_have_count(1)
    assert basket_rows(page).first.get_by_role("spinbutton").input_value() == "3"


def test_a_second_shopper_in_another_browser_sees_only_their_own_basket(new_page, storefront):
    alice, bob = unique_user("alice"), unique_user("bob")
    alice_page, bob_page = new_page(), new_page()
    storefront.sign_in(alice_page, alice)
    storefront.sign_in(bob_page, bob)

    alices = add_from_card(alice_page, alice_page.locator("li.card").nth(0))
    bobs = add_from_card(bob_page, bob_page.locator("li.card").nth(1))

    for page, user, name in ((alice_page, alice, alices), (bob_page, bob, bobs)):
        page.goto("/basket")
        expect(page.get_by_test_id("user-name")).to_have_text(user)
        expect(basket_rows(page)).to_have_count(1)
        expect(basket_rows(page).locator("td").nth(1)).to_have_text(name)
        expect(page.get_by_test_id("state-key")).to_have_text(f"basket-api||{user}")


def test_an_admin_price_change_shows_as_old_and_new_price_in_the_shoppers_basket(
    new_page: Callable[[], Page], storefront
):
    item = storefront.new_product(price=10.0)
    shopper, admin = new_page(), new_page()
    storefront.sign_in(shopper, unique_user("shopper"))
    shopper.goto(f"/items/{item['id']}")
    shopper.get_by_role("button", name="Add to basket").click()
    expect(shopper.locator(".flash.info")).to_contain_text(item["name"])

    storefront.sign_in(admin, unique_user("admin"), admin=True)
    admin.get_by_role("link", name="Admin").click()
    admin.get_by_label("Search").fill(item["name"])
    admin.get_by_role("button", name="Find").click()
    row = admin.locator(f"form.admin-row[data-product-id='{item['id']}']")
    row.get_by_label(f"price of {item['name']}").fill("12.50")
    row.get_by_role("button", name="Save").click()
    expect(admin.locator(".flash.info")).to_contain_text("price $10.00 → $12.50")
    expect(row.get_by_label(f"price of {item['name']}")).to_have_value("12.50")
    storefront.screenshot(admin, "admin")

    # The basket hears of the new price by an event: it shows up within moments.
    shopper.goto("/basket")
    line = basket_rows(shopper).filter(has_text=item["name"])
    deadline = time.monotonic() + 30
    while not line.locator(".old-price").count() and time.monotonic() < deadline:
        time.sleep(0.5)
        shopper.reload()
    expect(line.locator(".old-price")).to_have_text("$10.00")
    expect(line.locator(".new-price")).to_have_text("$12.50")
    expect(shopper.get_by_test_id("subtotal")).to_have_text("$12.50")
    expect(shopper.get_by_test_id("stored-json")).to_contain_text('"oldUnitPrice": 10.0')
    storefront.screenshot(shopper, "basket-price-change")


def test_an_admin_row_loaded_before_a_checkout_cannot_put_the_stock_back(
    new_page: Callable[[], Page], storefront
):
    """The admin opens the page (price $4.00, stock 25); a shopper checks out 3, which the catalog
    reserves; the admin changes only the price and saves. Nothing is written over the reservation:
    the page says the product changed and shows it as it is now, and the next save keeps the
    stock reserved."""
    item = storefront.new_product(price=4.0)
    admin, shopper = new_page(), new_page()
    storefront.sign_in(admin, unique_user("admin"), admin=True)
    admin.goto("/admin")
    admin.get_by_label("Search").fill(item["name"])
    admin.get_by_role("button", name="Find").click()
    row = admin.locator(f"form.admin-row[data-product-id='{item['id']}']")
    price, stock = (
        row.get_by_label(f"price of {item['name']}"),
        row.get_by_label(f"stock of {item['name']}"),
    )
    expect(stock).to_have_value("25")

    storefront.sign_in(shopper, unique_user("shopper"))
    shopper.goto(f"/items/{item['id']}")
    shopper.get_by_label("Quantity").fill("3")
    shopper.get_by_role("button", name="Add to basket").click()
    shopper.goto("/checkout")
    fill_shipping(shopper)
    shopper.get_by_role("button", name="Place order").click()
    expect(shopper).to_have_url(re.compile(r"/checkout/done"))
    with storefront.catalog_admin() as catalog:
        deadline = time.monotonic() + 30
        while catalog.get(f"/api/catalog/items/{item['id']}").json()["availableStock"] != 22:
            assert time.monotonic() < deadline, "the reservation of 3 did not arrive"
            time.sleep(0.3)

    price.fill("4.50")
    row.get_by_role("button", name="Save").click()
    expect(admin.locator(".flash.error")).to_contain_text("changed while this page was open")
    expect(admin.locator(".flash.error")).to_contain_text("stock 22")
    expect(stock).to_have_value("22")
    expect(price).to_have_value("4.00")
    storefront.screenshot(admin, "admin-stale-row")

    price.fill("4.50")
    row.get_by_role("button", name="Save").click()
    expect(admin.locator(".flash.info")).to_contain_text("price $4.00 → $4.50")
    expect(stock).to_have_value("22")
    with storefront.catalog_admin() as catalog:
        now = catalog.get(f"/api/catalog/items/{item['id']}").json()
    assert (now["price"], now["availableStock"]) == (4.5, 22)


def test_a_form_post_without_this_browsers_token_is_refused(new_page, storefront):
    page, other = new_page(), new_page()
    storefront.sign_in(page, unique_user())
    storefront.sign_in(other, unique_user())
    page.goto("/")
    product = page.locator("li.card").first.get_attribute("data-product-id")
    assert product
    token = page.locator("input[name=csrf_token]").first.input_value()
    others_token = other.locator("input[name=csrf_token]").first.input_value()

    def add(csrf: str | None):
        form = {"product_id": product, "quantity": "1", "next": "/"}
        if csrf is not None:
            form["csrf_token"] = csrf
        return page.request.post("/basket/items", form=form, max_redirects=0)

    # The control: with this browser's own token the same post is accepted.
    assert add(token).status == 303
    for csrf in (None, "", "forged-token", others_token):
        refused = add(csrf)
        assert refused.status == 403, csrf
        assert "The form has expired" in refused.text()
    page.goto("/basket")
    expect(basket_rows(page)).to_have_count(1)
    expect(basket_rows(page).get_by_role("spinbutton")).to_have_value("1")


def test_errors_from_the_apis_are_shown_as_readable_messages(page, storefront):
    storefront.sign_in(page, unique_user())
    card = page.locator("li.card").first
    card.locator("input[name=product_id]").evaluate("input => input.value = '2147483000'")
    card.get_by_role("button", name="Add to basket").click()
    expect(page.locator(".flash.error")).to_contain_text("2147483000")

    response = page.goto("/items/2147483000")
    assert response is not None
    assert response.status == 404
    expect(page.get_by_test_id("error-message")).to_be_visible()

    # Checking out an empty basket: the basket's 400 problem, in words, on the checkout page.
    token = page.locator("input[name=csrf_token]").first.input_value()
    form = {"csrf_token": token, "idempotency_key": "k-1", "full_name": "A", "street": "B",
            "city": "C", "postal_code": "D", "country": "E"}  # fmt: skip
    empty = page.request.post("/checkout", form=form, max_redirects=0)
    assert empty.status == 400
    assert 'data-testid="checkout-error"' in empty.text()
    assert "Traceback" not in empty.text()


def test_submitting_the_same_checkout_form_twice_checks_out_once(page, storefront):
    item = storefront.new_product(price=4.0)
    storefront.sign_in(page, unique_user())
    page.goto(f"/items/{item['id']}")
    page.get_by_role("button", name="Add to basket").click()
    page.goto("/checkout")
    fill_shipping(page)
    form = {
        field.get_attribute("name") or "": field.input_value()
        for field in page.locator("form.shipping input").all()
    }
    first = page.request.post("/checkout", form=form, max_redirects=0)
    second = page.request.post("/checkout", form=form, max_redirects=0)
    assert (first.status, second.status) == (303, 303)
    assert first.headers["location"] == second.headers["location"]
    assert "/checkout/done?request=" in first.headers["location"]


def test_pages_for_signed_in_users_and_admins_say_so(page, storefront):
    page.goto("/basket")
    expect(page).to_have_url(re.compile(r"/signin\?next=%2Fbasket$"))
    storefront.sign_in(page, unique_user())
    page.goto("/signin?next=%2Fbasket")
    page.get_by_label("User name").fill(unique_user())
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/basket$"))

    response = page.goto("/admin")
    assert response is not None
    assert response.status == 403
    expect(page.get_by_test_id("error-message")).to_contain_text("admin switch")
    expect(
        page.get_by_role("navigation", name="main").get_by_role("link", name="Admin")
    ).to_have_count(0)

    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("header").get_by_role("link", name="Sign in")).to_be_visible()


def test_product_names_are_shown_as_text_never_as_markup(page, storefront):
    name = 'Markup test <img src=x onerror="document.title=1"> & <b>bold</b> ' + unique_user("i")
    item = storefront.new_product(name=name)
    page.goto(f"/items/{item['id']}")
    expect(page.locator("h1")).to_have_text(name)
    expect(page.locator("main b, main img[src=x]")).to_have_count(0)
    assert page.title().startswith("Markup test <img")
