"""The list never costs more than two statements besides the catalog revision the read cache
checks first, a repeated read costs that one alone, and brand/type names never cost one per row."""

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.orm import Session

from catalog.models import CatalogItem


@contextmanager
def statements(*engines: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


@pytest.fixture(scope="module")
def both_engines(client, app_engine) -> tuple[Engine, Engine]:
    """The app's engine and the one the read cache reads the revision through."""
    return app_engine, client.app_state["read_cache"].revision_engine


def data(seen: list[str]) -> list[str]:
    """The statements besides the read cache's revision check, which comes first."""
    assert "catalog_revision" in seen[0], seen
    return seen[1:]


@pytest.mark.parametrize("page_size", [1, 10, 100])
@pytest.mark.parametrize(
    "filters",
    [{}, {"brandId": 1}, {"typeId": 2}, {"q": "tent"}, {"brandId": 4, "typeId": 7, "q": "dome"}],
)
def test_a_list_page_is_at_most_two_statements_whatever_size_and_filters(
    api, both_engines, page_size, filters
):
    filters = {**filters, "pageIndex": 0}
    with statements(*both_engines) as seen:
        page = api.list_items(pageSize=page_size, **filters)
    assert page["items"], "the case must load rows to mean anything"
    assert len(data(seen)) <= 2, seen
    with statements(*both_engines) as again:
        assert api.list_items(pageSize=page_size, **filters) == page
    assert data(again) == [], "an unchanged catalog: the revision alone"


def test_a_page_past_the_end_is_one_statement(api, both_engines):
    with statements(*both_engines) as seen:
        page = api.list_items(pageIndex=100_000)
    assert page["items"] == []
    assert len(data(seen)) <= 1


def test_by_ids_is_one_statement_for_a_hundred_ids(api, both_engines):
    ids = ",".join(str(i) for i in range(1, 101))
    with statements(*both_engines) as seen:
        response = api.client.get("/api/catalog/items/by-ids", params={"ids": ids})
    assert len(response.json()) >= 50
    assert len(data(seen)) <= 1, seen


def test_reading_one_item_is_one_statement(api, both_engines):
    with statements(*both_engines) as seen:
        api.get_item(1)
    assert len(data(seen)) <= 1


def test_loading_brand_lazily_raises_instead_of_querying_per_row(db):
    """The control: without the eager join, touching `brand` fails loudly (lazy="raise")."""
    with Session(db) as session:
        item = session.scalars(select(CatalogItem).limit(1)).one()
        with pytest.raises(InvalidRequestError, match="lazy='raise'"):
            _ = item.brand.name
        with pytest.raises(InvalidRequestError):
            _ = item.search_vector
