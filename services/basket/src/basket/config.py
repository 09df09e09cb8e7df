from pydantic import Field

from eshop_common.settings import ServiceSettings
from eshop_common.sidecar import SidecarSettings


class Settings(ServiceSettings, SidecarSettings):
    # The sidecar's address, token and timeout (5 s) come from SidecarSettings.
    state_store_name: str = "statestore"
    pubsub_name: str = "pubsub"
    catalog_app_id: str = "catalog-api"

    basket_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=1)
    basket_max_lines: int = Field(default=50, ge=1)
    # How long an Idempotency-Key and the response it stands for are remembered.
    idempotency_key_seconds: int = Field(default=24 * 3600, ge=1)
    # How long a request claiming an Idempotency-Key may run before another may take it over.
    idempotency_lease_seconds: float = Field(default=30.0, gt=0)
    # How long one read-modify-write keeps retrying after ETag conflicts before answering 409.
    # Inside one process a buyer's writes take turns, so only other replicas cause conflicts.
    basket_conflict_seconds: float = Field(default=10.0, gt=0)
    # How often each replica looks for checkouts another replica left unpublished.
    outbox_sweep_seconds: float = Field(default=30.0, gt=0)
    # The breaker in front of the state store: this many outages in a row open it for so long.
    store_breaker_threshold: int = Field(default=5, ge=1)
    store_breaker_open_seconds: float = Field(default=5.0, gt=0)
