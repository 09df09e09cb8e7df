"""`catalog-db migrate | seed | init`: bring the catalog database to the current schema and data."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config

from catalog import repository
from catalog.config import Settings
from catalog.seed import SeedResult, seed

ALEMBIC_DIR = Path(__file__).resolve().parent / "alembic"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    # Passed as an attribute, not an ini option: a URL's % signs would trip ini interpolation.
    config.attributes["database_url"] = database_url
    return config


def migrate(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def load_seed(database_url: str) -> SeedResult:
    engine = repository.make_engine(Settings(database_url=database_url))
    try:
        with repository.make_sessionmaker(engine).begin() as session:
            return seed(session)
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="catalog-db", description=__doc__)
    parser.add_argument(
        "command",
        choices=["migrate", "seed", "init"],
        help="migrate: alembic upgrade head; seed: load the sample catalog; init: both",
    )
    parser.add_argument("--database-url", help="defaults to DATABASE_URL from the environment")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings(**({"database_url": args.database_url} if args.database_url else {}))
    if args.command in ("migrate", "init"):
        migrate(settings.database_url)
        print("catalog-db: schema is at head")
    if args.command in ("seed", "init"):
        result = load_seed(settings.database_url)
        print(
            f"catalog-db: seed loaded ({result.items_inserted} of {result.items_total} items "
            f"inserted, {result.brands} brands, {result.types} types)"
        )
