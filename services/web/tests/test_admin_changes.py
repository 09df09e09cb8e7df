"""What the admin page sends when a row is saved: a JSON merge patch (RFC 7396) of the fields the
admin changed, and nothing else, so a field changed meanwhile by someone else is not written over
with what the page showed. The round trip is tested in a real browser (tests/browser)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from web.pages import admin_changes

prices = st.decimals(min_value=0, max_value=Decimal("99999999.99"), places=2)
stocks = st.integers(min_value=0, max_value=2**31 - 1)


def test_a_price_change_alone_sends_the_price_alone():
    """The stale-form case: the page showed stock 10, a checkout took 3 since; the admin changed
    only the price, so the stock the page showed is not sent."""
    assert admin_changes((Decimal("4.00"), 10), (Decimal("4.50"), 10)) == {"price": "4.50"}


def test_a_stock_change_alone_sends_the_stock_alone():
    assert admin_changes((Decimal("4.00"), 10), (Decimal("4.00"), 25)) == {"availableStock": 25}


def test_nothing_changed_sends_nothing():
    assert admin_changes((Decimal("4.00"), 10), (Decimal("4.00"), 10)) == {}


@given(prices, stocks, prices, stocks)
def test_the_patch_names_exactly_the_fields_that_differ(old_price, old_stock, price, stock):
    changes = admin_changes((old_price, old_stock), (price, stock))
    assert ("price" in changes) == (price != old_price)
    assert ("availableStock" in changes) == (stock != old_stock)
    if "price" in changes:
        assert Decimal(str(changes["price"])) == price
