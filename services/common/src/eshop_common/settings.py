"""Settings every service shares; each service subclasses `ServiceSettings`."""

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# A demo default so `docker compose up` and the local stack work out of the box. Override it with
# JWT_SECRET anywhere that is not a laptop.
DEMO_JWT_SECRET = "eshop-demo-jwt-secret-change-me-in-production"


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    jwt_secret: SecretStr = SecretStr(DEMO_JWT_SECRET)
    log_level: str = "INFO"
    # What the sidecar sends in `dapr-api-token` when it calls the app (events). When set, event
    # endpoints refuse callers without it, so nobody but the sidecar can post events.
    app_api_token: SecretStr | None = None
    # Load shedding (eshop_common.overload): requests served at once, how many more may wait
    # for a turn, and for how long, before the service answers 503 /problems/overloaded.
    max_in_flight_requests: int = Field(default=32, ge=1)
    max_waiting_requests: int = Field(default=64, ge=0)
    max_queue_wait_seconds: float = Field(default=0.5, ge=0)
