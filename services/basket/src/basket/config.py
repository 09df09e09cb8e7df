from typing import Literal

from pydantic import Field, SecretStr

from eshop_common.settings import ServiceSettings


class Settings(ServiceSettings):
    # Dapr's own variable names, so `dapr run` and the compose file set them for us.
    dapr_host: str = "127.0.0.1"
    dapr_http_port: int = 3500
    dapr_api_token: SecretStr | None = None
    # Upper bound for one call to the sidecar; the sidecar's resiliency policy retries inside it.
    dapr_timeout_seconds: float = 5.0
    # The client to the sidecar: aiohttp, or for comparison httpx on aiohttp's transport or its own.
    dapr_http_transport: Literal["aiohttp", "httpx-aiohttp", "httpx"] = "aiohttp"

    state_store_name: str = "statestore"
    pubsub_name: str = "pubsub"
    catalog_app_id: str = "catalog-api"

    basket_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=1)
    basket_max_lines: int = Field(default=50, ge=1)
    # How long a checkout's Idempotency-Key is remembered.
    checkout_idempotency_seconds: int = Field(default=24 * 3600, ge=1)
    # Attempts of one read-modify-write before answering 409.
    basket_conflict_attempts: int = Field(default=12, ge=1)
    # False saves last-write-wins without an ETag. It exists only so the lost-update
    # experiment can show what optimistic concurrency prevents; never turn it off in a deployment.
    basket_optimistic_concurrency: bool = True

    @property
    def dapr_url(self) -> str:
        return f"http://{self.dapr_host}:{self.dapr_http_port}"
