"""Catalog settings, read from the environment (DATABASE_URL, DB_POOL_SIZE, ...)."""

from pathlib import Path

from pydantic import Field, field_validator
from sqlalchemy.engine import make_url

from eshop_common.settings import ServiceSettings
from eshop_common.sidecar import SidecarSettings

PACKAGE_DIR = Path(__file__).resolve().parent
# The local stack's PostgreSQL (`make run`); containers and CI set DATABASE_URL.
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5433/postgres"


class Settings(ServiceSettings, SidecarSettings):
    database_url: str = DEFAULT_DATABASE_URL
    db_pool_size: int = 10
    db_max_overflow: int = 10
    # Bounds on how long a request may wait for the database before it gets a 503.
    db_pool_timeout: float = 2.0
    db_connect_timeout: int = 3
    db_statement_timeout_ms: int = 5000
    pictures_dir: Path = PACKAGE_DIR / "pictures"
    picture_max_age: int = 3600
    # Per process: the read cache's bound, in bytes of response bodies (plus ~400 per entry).
    # 4 MiB holds every list page a shopper pages through and a few thousand items.
    read_cache_bytes: int = Field(default=4 * 1024 * 1024, ge=0)

    # The sidecar, for publishing the outbox's events (SidecarSettings), answers a publish sooner.
    dapr_timeout_seconds: float = 3.0
    pubsub_name: str = "pubsub"
    outbox_relay_enabled: bool = True
    # How often the relay looks for unpublished events when there was nothing to do.
    outbox_poll_seconds: float = 0.25
    # How long a published outbox row and a handled event's id are kept (docs/06). A delivery of
    # an event whose id is older than this is handled again, so the window must be longer than
    # any redelivery can come: pub/sub retries take minutes, a dead letter older than this is
    # not replayed (dead_letters.service.replay), and a checkout left in a basket's outbox (by a
    # crash between publishing and removing it) is sent again when the buyer comes back, at
    # most the basket's TTL (BASKET_TTL_SECONDS, 30 days) later. 35 days, by default.
    event_retention_seconds: int = Field(default=35 * 24 * 3600, ge=3600)

    @field_validator("database_url")
    @classmethod
    def _use_psycopg3(cls, value: str) -> str:
        # Accept the plain postgresql:// form people copy around; always talk through psycopg 3.
        url = make_url(value)
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        return url.render_as_string(hide_password=False)
