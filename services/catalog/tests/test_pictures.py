"""The picture store serves shipped image files by name and nothing outside its directory."""

import pytest

from catalog.config import PACKAGE_DIR
from catalog.pictures import PictureStore


@pytest.fixture
def store() -> PictureStore:
    return PictureStore(PACKAGE_DIR / "pictures", max_age=60)


def test_a_shipped_picture_comes_with_type_etag_and_last_modified(store):
    picture = store.get("ridgeline-dome-2-tent.svg")
    assert picture is not None
    assert picture.content_type == "image/svg+xml"
    assert picture.etag.startswith('"')
    assert picture.last_modified.endswith("GMT")
    assert store.get("ridgeline-dome-2-tent.svg") is picture


@pytest.mark.parametrize(
    "name", ["../seed_data.json", "../models.py", "../pictures/../seed_data.json", "/etc/passwd"]
)
def test_names_that_leave_the_directory_find_nothing(store, name):
    assert store.get(name) is None


def test_files_that_are_not_images_find_nothing(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert PictureStore(tmp_path, max_age=60).get("notes.txt") is None


def test_a_missing_picture_is_found_once_it_is_added(tmp_path):
    store = PictureStore(tmp_path, max_age=60)
    assert store.get("late.svg") is None
    (tmp_path / "late.svg").write_text("<svg/>")
    assert store.get("late.svg") is not None
