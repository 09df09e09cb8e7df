"""The catalog's domain errors; each carries its HTTP status and renders as problem details."""

from eshop_common.conditions import ConditionFailed
from eshop_common.problems import (
    Conflict,
    NotFound,
    ServiceUnavailable,
    UnprocessableContent,
    UnsupportedMediaType,
)

MERGE_PATCH = "application/merge-patch+json"


class ItemNotFound(NotFound):
    def __init__(self, item_id: int) -> None:
        super().__init__(f"Catalog item {item_id} does not exist.", itemId=item_id)


class PictureNotFound(NotFound):
    def __init__(self, item_id: int) -> None:
        super().__init__(f"Catalog item {item_id} has no picture.", itemId=item_id)


class StaleItem(ConditionFailed):
    """The item is no longer at the version the request's If-Match names (RFC 9110 §13.1.1)."""

    def __init__(self, item_id: int) -> None:
        super().__init__(
            f"Catalog item {item_id} has changed since the version this request's If-Match "
            f"names (a stock reservation or another change); nothing was written. "
            f"GET /api/catalog/items/{item_id} gives its current values and ETag.",
            itemId=item_id,
        )


class NotAMergePatch(UnsupportedMediaType):
    """A PATCH body in a format the item does not take (RFC 5789 §2.2)."""

    def __init__(self, content_type: str | None) -> None:
        super().__init__(
            f"A catalog item is patched with a JSON merge patch (RFC 7396), sent as "
            f"Content-Type: {MERGE_PATCH}; this request sent {content_type or 'none'}.",
            headers={"Accept-Patch": MERGE_PATCH},
        )


class DuplicateItemName(Conflict):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"A catalog item named {name!r} already exists.",
            errors=[{"field": "name", "in": "body", "message": "is already taken"}],
        )


class InvalidField(UnprocessableContent):
    """A well-formed value that the catalog's data does not allow (an unknown brand, say)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(
            f"{field}: {message}",
            errors=[{"field": field, "in": "body", "message": message}],
        )

    @property
    def title(self) -> str:
        return "Validation failed"


class DatabaseUnavailable(ServiceUnavailable):
    type = "/problems/database-unavailable"

    def __init__(self) -> None:
        super().__init__("The catalog database is not reachable right now; try again shortly.")
