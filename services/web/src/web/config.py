from pydantic import Field, SecretStr

from eshop_common.settings import ServiceSettings


class Settings(ServiceSettings):
    # Dapr's own variable names, so `dapr run` and the compose file set them for us.
    dapr_host: str = "127.0.0.1"
    dapr_http_port: int = 3500
    dapr_api_token: SecretStr | None = None
    # Upper bound for one call through the sidecar; the called app's sidecar may retry inside it.
    dapr_timeout_seconds: float = 5.0

    catalog_app_id: str = "catalog-api"
    basket_app_id: str = "basket-api"

    page_size: int = Field(default=12, ge=1, le=100)
    # How long a demo sign-in lasts: the token's lifetime and its cookie's.
    session_hours: int = Field(default=8, ge=1, le=24 * 30)
    # True behind HTTPS, so the browser sends the session cookie over TLS only.
    cookie_secure: bool = False

    @property
    def dapr_url(self) -> str:
        return f"http://{self.dapr_host}:{self.dapr_http_port}"
