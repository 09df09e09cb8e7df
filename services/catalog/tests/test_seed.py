"""The sample's own catalog: big enough to page through, pictures shipped, loaded idempotently."""

import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from catalog.db_cli import load_seed, main, migrate
from catalog.seed import load_seed_file
from devstack.pytest_plugin import new_database

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "src" / "catalog"
SNAPSHOT = sa.text(
    "SELECT i.*, b.name AS brand, t.name AS type FROM catalog_item i "
    "JOIN catalog_brand b ON b.id = i.catalog_brand_id "
    "JOIN catalog_type t ON t.id = i.catalog_type_id ORDER BY i.id"
)


def snapshot(url: str) -> list[tuple]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(SNAPSHOT)]
    finally:
        engine.dispose()


def test_seed_has_at_least_fifty_items_five_brands_and_five_types():
    data = load_seed_file()
    assert len(data["items"]) >= 50
    assert len(data["brands"]) >= 5
    assert len(data["types"]) >= 5
    assert {item["brand"] for item in data["items"]} == set(data["brands"])
    assert {item["type"] for item in data["items"]} == set(data["types"])


def test_every_seed_item_has_a_shipped_picture():
    for item in load_seed_file()["items"]:
        assert (PACKAGE_DIR / "pictures" / item["pictureFileName"]).is_file(), item["name"]


def test_shipped_pictures_are_what_the_generator_script_draws(tmp_path):
    script = PACKAGE_DIR.parents[1] / "scripts" / "make_pictures.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True)
    for drawn in tmp_path.iterdir():
        assert drawn.read_bytes() == (PACKAGE_DIR / "pictures" / drawn.name).read_bytes()


def test_seeding_twice_changes_nothing(postgres_server):
    url = new_database(postgres_server, "seed")
    migrate(url)
    first = load_seed(url)
    assert first.items_inserted == first.items_total >= 50
    before = snapshot(url)
    second = load_seed(url)
    assert second.items_inserted == 0
    assert snapshot(url) == before


def test_seeding_again_keeps_an_admins_edit_and_restores_a_deleted_item(postgres_server):
    url = new_database(postgres_server, "seed")
    migrate(url)
    load_seed(url)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE catalog_item SET price = 1 WHERE id = 1"))
            conn.execute(sa.text("DELETE FROM catalog_item WHERE id = 2"))
        assert load_seed(url).items_inserted == 1
        with engine.connect() as conn:
            assert (
                conn.execute(sa.text("SELECT price FROM catalog_item WHERE id = 1")).scalar() == 1
            )
            assert conn.execute(sa.text("SELECT count(*) FROM catalog_item")).scalar() == len(
                load_seed_file()["items"]
            )
    finally:
        engine.dispose()


def test_catalog_db_init_migrates_and_seeds(postgres_server, capsys):
    url = new_database(postgres_server, "init")
    main(["init", "--database-url", url])
    main(["init", "--database-url", url])
    out = capsys.readouterr().out
    assert "schema is at head" in out
    assert "0 of" in out.splitlines()[-1]
    assert len(snapshot(url)) == len(load_seed_file()["items"])
