"""The sample's own catalog, loaded idempotently: rows are matched by name and only missing ones
are inserted, so running the seed again (as every stack start does) changes nothing, not even an
admin's later edit of a seeded item."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from catalog import repository
from catalog.models import CatalogBrand, CatalogType

SEED_FILE = Path(__file__).resolve().parent / "seed_data.json"


@dataclass(frozen=True)
class SeedResult:
    brands: int
    types: int
    items_inserted: int
    items_total: int


def load_seed_file(path: Path = SEED_FILE) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def seed(session: Session, data: dict[str, Any] | None = None) -> SeedResult:
    data = data or load_seed_file()
    brand_ids = repository.ensure_named_rows(session, CatalogBrand, data["brands"])
    type_ids = repository.ensure_named_rows(session, CatalogType, data["types"])
    rows = [
        {
            "name": item["name"],
            "description": item["description"],
            "price": Decimal(item["price"]),
            "picture_file_name": item["pictureFileName"],
            "catalog_brand_id": brand_ids[item["brand"]],
            "catalog_type_id": type_ids[item["type"]],
            "available_stock": item["availableStock"],
            "restock_threshold": item["restockThreshold"],
            "max_stock_threshold": item["maxStockThreshold"],
        }
        for item in data["items"]
    ]
    inserted = repository.insert_missing_items(session, rows)
    return SeedResult(len(brand_ids), len(type_ids), inserted, len(rows))
