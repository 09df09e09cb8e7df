from pydantic import Field

from eshop_common.settings import ServiceSettings
from eshop_common.sidecar import SidecarSettings


class Settings(ServiceSettings, SidecarSettings):
    # The sidecar's address, token and timeout (5 s) come from SidecarSettings; the called
    # app's sidecar may retry inside the timeout.
    catalog_app_id: str = "catalog-api"
    basket_app_id: str = "basket-api"

    page_size: int = Field(default=12, ge=1, le=100)
    # How long a demo sign-in lasts: the token's lifetime and its cookie's.
    session_hours: int = Field(default=8, ge=1, le=24 * 30)
    # True behind HTTPS, so the browser sends the session cookie over TLS only.
    cookie_secure: bool = False
