"""The read cache never serves a catalog that has changed since: every change, through any
replica or none, moves the revision in its own transaction; conditional GETs (RFC 9110 §13.1.2)
answer 304 only while nothing has changed.

The safety tests each have a control that shows what they would catch: with the revision trigger
gone, the same cache serves a stale item; with the trigger immediate instead of deferred, the same
two writers deadlock."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from psycopg import errors as pg
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import IntegrityError, OperationalError

from catalog.config import Settings
from catalog.db_cli import load_seed, migrate
from catalog.main import create_catalog_app
from catalog.read_cache import LOOKUPS
from devstack.pytest_plugin import new_database

ITEMS = "/api/catalog/items"
TRIGGER = "catalog_item_bumps_revision"


def revision(db: Engine) -> int:
    with db.connect() as conn:
        return int(conn.execute(text("SELECT revision FROM catalog_revision")).scalar_one())


def hits() -> float:
    return LOOKUPS.labels(outcome="hit")._value.get()


def search(client: TestClient, word: str) -> dict[str, Any]:
    """The list page of the items whose name holds `word` (each test names its items uniquely)."""
    response = client.get(ITEMS, params={"q": word})
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def named(api, **overrides: Any) -> tuple[dict[str, Any], str]:
    """A new item whose name holds a word no other item has, and that word."""
    word = f"w{uuid.uuid4().hex[:10]}"
    return api.create_item(name=f"Cache test {word}", **overrides), word


def cloud_event(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()), "specversion": "1.0", "source": "basket-api",
        "type": "UserCheckoutAccepted", "datacontenttype": "application/json",
        "pubsubname": "pubsub", "topic": "user-checkout-accepted", "data": data,
    }  # fmt: skip


def checkout_event(*lines: tuple[int, int]) -> dict[str, Any]:
    return cloud_event(
        {
            "requestId": str(uuid.uuid4()),
            "buyerId": "alice",
            "items": [{"productId": p, "quantity": q} for p, q in lines],
        }
    )


# ---- the revision ------------------------------------------------------------------------------


def test_a_committed_change_moves_the_revision_and_a_rolled_back_one_does_not(db, api):
    item, _ = named(api)
    before = revision(db)
    with db.connect() as conn:
        conn.execute(text("UPDATE catalog_item SET price = price + 1 WHERE id = :id"), item)
        conn.rollback()
    assert revision(db) == before
    with db.begin() as conn:
        conn.execute(text("UPDATE catalog_item SET price = price + 1 WHERE id = :id"), item)
    assert revision(db) > before


def test_a_write_refused_by_its_precondition_rolls_back_without_moving_the_revision(db, api):
    """The 412 of a stale If-Match (RFC 9110 §13.1.1) rolls the transaction back: no bump, and the
    next read is still a hit."""
    item, word = named(api)
    search(api.client, word)
    before, hit_count = revision(db), hits()
    stale = {**api.admin_headers, "If-Match": '"999"'}
    refused = api.client.patch(
        f"{ITEMS}/{item['id']}", json={"price": 99}, headers={**stale,
        "Content-Type": "application/merge-patch+json"},
    )  # fmt: skip
    assert refused.status_code == 412
    assert revision(db) == before
    assert search(api.client, word)["items"][0]["price"] == item["price"]
    assert hits() == hit_count + 1


def test_the_revision_is_one_row_and_cannot_become_two(db):
    with pytest.raises(IntegrityError) as caught, db.begin() as conn:
        conn.execute(text("INSERT INTO catalog_revision (id, revision) VALUES (2, 1)"))
    assert isinstance(caught.value.orig, pg.CheckViolation)


# ---- every kind of change shows on the next read ---------------------------------------------


def read_both(api, item_id: int, word: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The list page and the item as a client sees them next (the item None when it is gone)."""
    page = search(api.client, word)
    response = api.client.get(f"{ITEMS}/{item_id}")
    return page, (response.json() if response.status_code == 200 else None)


def test_put_shows_on_the_next_list_and_item_read(api):
    item, word = named(api)
    read_both(api, item["id"], word)  # both cached now
    body = {**api.new_item(), "name": item["name"], "price": 77.5}
    changed = api.client.put(f"{ITEMS}/{item['id']}", json=body, headers=api.at_version(item))
    assert changed.status_code == 200, changed.text
    page, fresh = read_both(api, item["id"], word)
    assert page["items"][0]["price"] == fresh["price"] == 77.5
    assert fresh["version"] == item["version"] + 1


def test_patch_shows_on_the_next_list_and_item_read(api):
    item, word = named(api)
    read_both(api, item["id"], word)
    changed = api.client.patch(
        f"{ITEMS}/{item['id']}", json={"description": "patched"},
        headers={**api.at_version(item), "Content-Type": "application/merge-patch+json"},
    )  # fmt: skip
    assert changed.status_code == 200, changed.text
    page, fresh = read_both(api, item["id"], word)
    assert page["items"][0]["description"] == fresh["description"] == "patched"


def test_post_shows_on_the_next_list_read(api):
    word = f"w{uuid.uuid4().hex[:10]}"
    assert search(api.client, word)["count"] == 0  # cached: an empty page
    api.create_item(name=f"Cache test {word}")
    assert search(api.client, word)["count"] == 1


def test_delete_shows_on_the_next_list_and_item_read(api):
    item, word = named(api)
    read_both(api, item["id"], word)
    assert api.client.delete(f"{ITEMS}/{item['id']}", headers=api.admin_headers).status_code == 204
    page, fresh = read_both(api, item["id"], word)
    assert page["count"] == 0
    assert fresh is None


def test_a_stock_reservation_shows_on_the_next_list_and_item_read(api):
    item, word = named(api, availableStock=10)
    read_both(api, item["id"], word)
    delivered = api.client.post(
        "/events/user-checkout-accepted", json=checkout_event((item["id"], 3))
    )
    assert delivered.json() == {"status": "SUCCESS"}
    page, fresh = read_both(api, item["id"], word)
    assert page["items"][0]["availableStock"] == fresh["availableStock"] == 7


def test_a_brand_or_type_added_renamed_or_removed_in_sql_shows_on_the_next_read(api, db):
    """The API has no brand or type writes; whatever writes them (a migration, psql) moves the
    revision all the same, because the trigger is on the table."""
    for table, path in (
        ("catalog_brand", "/api/catalog/brands"),
        ("catalog_type", "/api/catalog/types"),
    ):
        name = f"Cache test {uuid.uuid4().hex[:8]}"
        api.client.get(path)
        with db.begin() as conn:
            new_id = conn.execute(
                text(f"INSERT INTO {table} (name) VALUES (:n) RETURNING id"), {"n": name}
            ).scalar_one()
        assert name in [row["name"] for row in api.client.get(path).json()]
        with db.begin() as conn:
            conn.execute(text(f"UPDATE {table} SET name = :n WHERE id = :id"),
                         {"n": name + " renamed", "id": new_id})  # fmt: skip
        assert name + " renamed" in [row["name"] for row in api.client.get(path).json()]
        with db.begin() as conn:
            conn.execute(text(f"DELETE FROM {table} WHERE id = :id"), {"id": new_id})
        assert new_id not in [row["id"] for row in api.client.get(path).json()]


def test_an_item_changed_in_raw_sql_shows_on_the_next_read(api, db):
    item, word = named(api)
    read_both(api, item["id"], word)
    with db.begin() as conn:
        conn.execute(text("UPDATE catalog_item SET price = 1.25 WHERE id = :id"), item)
    page, fresh = read_both(api, item["id"], word)
    assert page["items"][0]["price"] == fresh["price"] == 1.25


@pytest.fixture(scope="module")
def second_client(settings: Settings) -> Iterator[TestClient]:
    """A second replica: its own process state and read cache, the same database."""
    with TestClient(create_catalog_app(settings)) as other:
        yield other


def test_an_edit_through_one_replica_is_seen_through_the_other_at_once(api, second_client):
    item, word = named(api)
    assert search(second_client, word)["items"][0]["price"] == 12.5  # cached by the second
    assert second_client.get(f"{ITEMS}/{item['id']}").json()["price"] == 12.5
    changed = api.client.patch(
        f"{ITEMS}/{item['id']}", json={"price": 3},
        headers={**api.at_version(item), "Content-Type": "application/merge-patch+json"},
    )  # fmt: skip
    assert changed.status_code == 200
    assert search(second_client, word)["items"][0]["price"] == 3
    assert second_client.get(f"{ITEMS}/{item['id']}").json()["price"] == 3


def test_an_unchanged_catalog_is_served_from_the_cache(api):
    """The point of it all: a repeated read is a hit (so the other tests' fresh reads are the
    revision's doing, not a cache that never hits)."""
    _, word = named(api)
    search(api.client, word)
    before = hits()
    search(api.client, word)
    search(api.client, word)
    assert hits() == before + 2


# ---- the controls: what the safeguards prevent ------------------------------------------------


@pytest.fixture(scope="module")
def private_db(postgres_server) -> Iterator[tuple[str, Engine]]:
    """A database of its own, for tests that take the triggers away."""
    url = new_database(postgres_server, "cache_controls")
    migrate(url)
    load_seed(url)
    engine = create_engine(url)
    yield url, engine
    engine.dispose()


def test_control_without_the_revision_trigger_the_cache_serves_a_stale_item(private_db):
    url, engine = private_db
    app = create_catalog_app(Settings(database_url=url, outbox_relay_enabled=False))
    with TestClient(app) as c:
        assert c.get(f"{ITEMS}/1").json()["price"] != 0.5  # cached
        with engine.begin() as conn:
            conn.execute(text(f"ALTER TABLE catalog_item DISABLE TRIGGER {TRIGGER}"))
            conn.execute(text("UPDATE catalog_item SET price = 0.5 WHERE id = 1"))
        stale = c.get(f"{ITEMS}/1").json()["price"]
        with engine.begin() as conn:
            conn.execute(text(f"ALTER TABLE catalog_item ENABLE TRIGGER {TRIGGER}"))
            conn.execute(text("UPDATE catalog_item SET price = 0.75 WHERE id = 1"))
        fresh = c.get(f"{ITEMS}/1").json()["price"]
    assert stale != 0.5, "the control shows nothing: the cache was not in the way"
    assert fresh == 0.75


# Two writers that would deadlock on the revision row if the trigger took its lock at once:
# A changes item 1, B changes item 2, A then waits for item 2. Deferred, B commits (taking the
# revision last) and A goes on; immediate, B waits for the revision A holds: a deadlock.


TAKE_ONE = text("UPDATE catalog_item SET available_stock = available_stock + 1 WHERE id = :id")


def _crossing_writers(engine: Engine) -> list[BaseException | None]:
    a, b = engine.connect(), engine.connect()
    outcome: list[BaseException | None] = [None, None]
    try:
        a.execute(TAKE_ONE, {"id": 1})

        def b_writes() -> None:
            try:
                b.execute(TAKE_ONE, {"id": 2})
                b.commit()
            except OperationalError as exc:
                outcome[1] = exc
                b.rollback()

        writer = threading.Thread(target=b_writes)
        writer.start()
        writer.join(0.5)  # B has locked item 2 (and, immediate, is waiting for the revision)
        try:
            a.execute(TAKE_ONE, {"id": 2})
            a.commit()
        except OperationalError as exc:
            outcome[0] = exc
            a.rollback()
        writer.join(10)
    finally:
        a.close()
        b.close()
    return outcome


def test_two_writers_crossing_over_the_same_items_both_commit(db):
    before = revision(db)
    assert _crossing_writers(db) == [None, None]
    assert revision(db) >= before + 3  # three rows changed: at least three bumps


def test_control_with_an_immediate_trigger_the_same_writers_deadlock(private_db):
    _, engine = private_db
    immediate = """
        DROP TRIGGER catalog_item_bumps_revision ON catalog_item;
        CREATE TRIGGER catalog_item_bumps_revision AFTER INSERT OR UPDATE OR DELETE
        ON catalog_item FOR EACH ROW EXECUTE FUNCTION bump_catalog_revision()"""
    deferred = """
        DROP TRIGGER catalog_item_bumps_revision ON catalog_item;
        CREATE CONSTRAINT TRIGGER catalog_item_bumps_revision AFTER INSERT OR UPDATE OR DELETE
        ON catalog_item DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION bump_catalog_revision()"""
    with engine.begin() as conn:
        conn.execute(text(immediate))
    try:
        outcome = _crossing_writers(engine)
    finally:
        with engine.begin() as conn:
            conn.execute(text(deferred))
    failures = [exc for exc in outcome if exc is not None]
    assert len(failures) == 1
    assert isinstance(failures[0].orig, pg.DeadlockDetected)


def test_concurrent_reservations_of_the_same_items_in_opposite_orders_all_succeed(api, db):
    first, second = api.create_item(availableStock=1000), api.create_item(availableStock=1000)
    pair = (first["id"], second["id"])
    events = [checkout_event((pair[n % 2], 1), (pair[1 - n % 2], 1)) for n in range(16)]
    answers: list[Any] = []

    def deliver(event: dict[str, Any]) -> None:
        answers.append(api.client.post("/events/user-checkout-accepted", json=event).json())

    threads = [threading.Thread(target=deliver, args=(event,)) for event in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers == [{"status": "SUCCESS"}] * 16
    assert api.get_item(first["id"])["availableStock"] == 984
    assert api.get_item(second["id"])["availableStock"] == 984


# ---- conditional GET (RFC 9110 §13.1.2, §15.4.5) ----------------------------------------------

READS = [
    f"{ITEMS}?pageSize=3",
    f"{ITEMS}/by-ids?ids=1,2",
    "/api/catalog/brands",
    "/api/catalog/types",
]


@pytest.mark.parametrize("path", [*READS, f"{ITEMS}/1"])
def test_the_current_validator_gets_304_with_the_etag_and_no_body(client, path):
    """§13.1.2: If-None-Match matching the current representation -> 304; §15.4.5: it carries
    the ETag and Cache-Control a 200 would have, and no content."""
    first = client.get(path)
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "no-cache"
    again = client.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert again.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize("path", READS)
def test_lists_carry_a_weak_validator_naming_the_revision(client, db, path):
    """§8.8.1: weak, it names a state of the catalog rather than these exact bytes."""
    assert client.get(path).headers["etag"] == f'W/"r{revision(db)}"'


def test_the_item_keeps_its_strong_version_etag(api):
    item, _ = named(api)
    assert api.client.get(f"{ITEMS}/{item['id']}").headers["etag"] == f'"{item["version"]}"'


def test_a_stale_validator_gets_the_full_200(api):
    item, word = named(api)
    old = api.client.get(f"{ITEMS}?q={word}").headers["etag"]
    old_item = api.client.get(f"{ITEMS}/{item['id']}").headers["etag"]
    api.client.patch(
        f"{ITEMS}/{item['id']}", json={"price": 2},
        headers={**api.at_version(item), "Content-Type": "application/merge-patch+json"},
    )  # fmt: skip
    page = api.client.get(f"{ITEMS}?q={word}", headers={"If-None-Match": old})
    assert page.status_code == 200
    assert page.json()["items"][0]["price"] == 2
    assert page.headers["etag"] != old
    one = api.client.get(f"{ITEMS}/{item['id']}", headers={"If-None-Match": old_item})
    assert one.status_code == 200
    assert one.json()["price"] == 2


@pytest.mark.parametrize("path", [*READS, f"{ITEMS}/1"])
def test_a_star_matches_any_current_representation(client, path):
    """§13.1.2: `*` is false (so 304 for a GET) whenever a current representation exists."""
    assert client.get(path, headers={"If-None-Match": "*"}).status_code == 304


def test_a_star_does_not_hide_a_missing_item(client):
    """§13.2.1: preconditions are not evaluated when the answer without them is not a 2xx."""
    assert client.get(f"{ITEMS}/2000000000", headers={"If-None-Match": "*"}).status_code == 404


def test_a_list_of_tags_matches_when_any_member_does(client):
    etag = client.get("/api/catalog/brands").headers["etag"]
    listed = client.get("/api/catalog/brands", headers={"If-None-Match": f'"x", W/"r0", {etag}'})
    assert listed.status_code == 304
    lines = [("If-None-Match", '"x"'), ("If-None-Match", etag)]
    split = client.get("/api/catalog/brands", headers=lines)
    assert split.status_code == 304  # §5.3: several field lines are one list


def test_if_none_match_compares_weakly(api):
    """§8.8.3.2: weak comparison ignores the W/ prefix on either side: the strong item tag "7"
    sent back as W/"7", and the weak list tag W/"r5" sent back as "r5", both match."""
    item, _ = named(api)
    weak_item = f'W/"{item["version"]}"'
    one = api.client.get(f"{ITEMS}/{item['id']}", headers={"If-None-Match": weak_item})
    assert one.status_code == 304
    strong_list = api.client.get("/api/catalog/types").headers["etag"].removeprefix("W/")
    types = api.client.get("/api/catalog/types", headers={"If-None-Match": strong_list})
    assert types.status_code == 304


# Entity tags and lists of them, well-formed or broken near the edges (a missing quote, a tag
# without quotes, a stray `*`).
WELL_FORMED_OR_NEARLY = (
    r'\A[ \t]*(W/)?"[\x21\x23-\x7e\x80-\xff]{0,10}"?[ \t]*(,[ \t]*(W/)?[a-z"*]{0,5})*\Z'
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    value=st.one_of(
        # Field values are octets (RFC 9110 §5.5): visible ASCII, space, tab and obs-text.
        st.text(alphabet=st.characters(codec="latin-1", exclude_categories=["Cc"]), max_size=40),
        st.from_regex(WELL_FORMED_OR_NEARLY),
        st.sampled_from(["*", " * ", "*, *", '*, "x"', "W/", 'w/"x"', '""', ",", " , ,"]),
    )
)
def test_any_odd_if_none_match_is_either_a_304_or_the_full_200_never_an_error(client, value):
    """A value outside §13.1.2's grammar is ignored (the answer is 200, always correct for a
    GET); a well-formed one answers 304 exactly when it names the current tag or is `*`."""
    path = f"{ITEMS}?pageSize=2"
    current = client.get(path).headers["etag"]
    response = client.get(path, headers={"If-None-Match": value.encode("latin-1")})
    assert response.status_code in (200, 304), response.text
    opaque = current.removeprefix("W/")
    expected_304 = _well_formed_and_names(value, opaque)
    assert (response.status_code == 304) == expected_304, (value, current)
    if response.status_code == 200:
        assert response.json()["pageSize"] == 2


def _well_formed_and_names(value: str, opaque: str) -> bool:
    from eshop_common.conditions import MalformedPrecondition, parse_tag_list

    try:
        tags = parse_tag_list("If-None-Match", [value])
    except MalformedPrecondition:
        return False
    if tags is None:
        return False
    return tags == "*" or any(f'"{tag.opaque}"' == opaque for tag in tags)


# ---- a generated history of edits and reads ---------------------------------------------------


CURRENT = text(
    "SELECT price, description, available_stock, version FROM catalog_item WHERE id = :id"
)


class CachedReadsMatchTheDatabase(RuleBasedStateMachine):
    """Admin edits, stock reservations and raw SQL writes interleaved with reads through two
    replicas: every read equals what a fresh query of the database says at that moment."""

    api: Any = None
    other: Any = None
    db: Any = None

    @initialize()
    def make_items(self) -> None:
        self.word = f"w{uuid.uuid4().hex[:10]}"
        self.items = [
            self.api.create_item(name=f"Cache test {self.word} {n}", availableStock=1000)["id"]
            for n in range(3)
        ]

    def _current(self, item_id: int) -> dict[str, Any]:
        with self.db.connect() as conn:
            row = conn.execute(
                CURRENT,
                {"id": item_id},
            ).one()
        return {"price": float(row.price), "description": row.description,
                "availableStock": row.available_stock, "version": row.version}  # fmt: skip

    @rule(n=st.integers(0, 2), price=st.integers(1, 500))
    def patch_price(self, n: int, price: int) -> None:
        item_id = self.items[n]
        headers = {**self.api.admin_headers, "If-Match": "*",
                   "Content-Type": "application/merge-patch+json"}  # fmt: skip
        self.api.client.patch(f"{ITEMS}/{item_id}", json={"price": price}, headers=headers)

    @rule(n=st.integers(0, 2), quantity=st.integers(1, 3))
    def reserve(self, n: int, quantity: int) -> None:
        event = checkout_event((self.items[n], quantity))
        self.api.client.post("/events/user-checkout-accepted", json=event)

    @rule(n=st.integers(0, 2), description=st.sampled_from(["a", "b", "c"]))
    def raw_sql_edit(self, n: int, description: str) -> None:
        with self.db.begin() as conn:
            conn.execute(text("UPDATE catalog_item SET description = :d WHERE id = :id"),
                         {"d": description, "id": self.items[n]})  # fmt: skip

    @rule(n=st.integers(0, 2), description=st.sampled_from(["x", "y"]))
    def rolled_back_edit(self, n: int, description: str) -> None:
        with self.db.connect() as conn:
            conn.execute(text("UPDATE catalog_item SET description = :d WHERE id = :id"),
                         {"d": description, "id": self.items[n]})  # fmt: skip
            conn.rollback()

    @precondition(lambda self: hasattr(self, "items"))
    @invariant()
    def reads_through_either_replica_are_current(self) -> None:
        for client in (self.api.client, self.other):
            page = search(client, self.word)
            listed = {item["id"]: item for item in page["items"]}
            for item_id in self.items:
                want = self._current(item_id)
                one = client.get(f"{ITEMS}/{item_id}")
                assert one.headers["etag"] == f'"{want["version"]}"'
                for got in (listed[item_id], one.json()):
                    assert {k: got[k] for k in want} == want


def test_generated_histories_of_edits_and_reads(api, second_client, db):
    CachedReadsMatchTheDatabase.api = api
    CachedReadsMatchTheDatabase.other = second_client
    CachedReadsMatchTheDatabase.db = db
    machine = CachedReadsMatchTheDatabase.TestCase
    machine.settings = settings(max_examples=15, stateful_step_count=12, deadline=None)
    machine().runTest()


# -- an item's ETag moves with its representation (RFC 9110 §8.8.3) --------------------------------
def test_renaming_an_items_brand_or_type_moves_its_etag_so_no_304_for_the_old_copy(api, db):
    """§8.8.3: a strong validator changes whenever the representation does. The item shows its
    brand's and type's names, so a rename is a new representation: the old ETag must not get a
    304 (§13.1.2), nor pass an If-Match."""
    for table, field in (("catalog_brand", "catalogBrandId"), ("catalog_type", "catalogTypeId")):
        with db.begin() as conn:
            named_id = conn.execute(
                text(f"INSERT INTO {table} (name) VALUES (:n) RETURNING id"),
                {"n": f"Old {uuid.uuid4().hex[:8]}"},
            ).scalar_one()
        item = api.create_item(**{field: named_id})
        old = api.client.get(f"{ITEMS}/{item['id']}").headers["etag"]
        with db.begin() as conn:
            conn.execute(
                text(f"UPDATE {table} SET name = :n WHERE id = :id"),
                {"n": f"New {uuid.uuid4().hex[:8]}", "id": named_id},
            )
        again = api.client.get(f"{ITEMS}/{item['id']}", headers={"If-None-Match": old})
        assert again.status_code == 200, table
        assert again.headers["etag"] != old, table


def test_an_item_changed_in_raw_sql_gets_a_new_etag(api, db):
    """A writer that does not know about the version column (raw SQL) still moves it: the old
    ETag gets no 304 (§13.1.2) and an admin's write based on it is refused (§13.1.1)."""
    item = api.create_item()
    old = api.client.get(f"{ITEMS}/{item['id']}").headers["etag"]
    with db.begin() as conn:
        conn.execute(
            text("UPDATE catalog_item SET price = 1.25 WHERE id = :id"), {"id": item["id"]}
        )
    again = api.client.get(f"{ITEMS}/{item['id']}", headers={"If-None-Match": old})
    assert (again.status_code, again.json()["price"]) == (200, 1.25)
    assert again.headers["etag"] != old


def test_the_revision_moves_past_every_number_a_restored_database_had_reached(db):
    """A database restored from a backup (its revision set back) and then changed must not reach
    a number it had before the restore: a replica still caching entries of the lost changes, or
    a client holding their ETags, would take them for current."""
    with db.begin() as conn:
        conn.execute(text("INSERT INTO catalog_brand (name) VALUES (:n)"), {"n": uuid.uuid4().hex})
    reached = revision(db)
    with db.begin() as conn:  # the restore: the revision as a backup taken earlier had it
        conn.execute(text("UPDATE catalog_revision SET revision = revision - 1000"))
    with db.begin() as conn:
        conn.execute(text("INSERT INTO catalog_brand (name) VALUES (:n)"), {"n": uuid.uuid4().hex})
    assert revision(db) > reached


def test_the_cache_holds_no_more_memory_than_its_bound_whatever_its_keys():
    """READ_CACHE_BYTES bounds what the entries hold, keys included: 3,000 by-ids answers of `[]`
    under keys of 100 ids each (4 KB of key apiece), measured with tracemalloc."""
    import tracemalloc

    from catalog.read_cache import Entry, ReadCache

    bound = 256 * 1024
    cache = ReadCache(None, None, bound)  # type: ignore[arg-type]  # _store needs no database
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for n in range(3000):
            key = ("by-ids", tuple(range(2_000_000_000 + 100 * n, 2_000_000_100 + 100 * n)))
            cache._store(key, Entry(n, b"[]", f'W/"r{n}"'))
        held = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert 0 < len(cache) < 3000
    assert held <= bound, held
