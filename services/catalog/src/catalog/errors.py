"""The catalog's domain errors; each carries its HTTP status and renders as problem details."""

from eshop_common.problems import Conflict, NotFound, ServiceUnavailable, UnprocessableContent


class ItemNotFound(NotFound):
    def __init__(self, item_id: int) -> None:
        super().__init__(f"Catalog item {item_id} does not exist.", itemId=item_id)


class PictureNotFound(NotFound):
    def __init__(self, item_id: int) -> None:
        super().__init__(f"Catalog item {item_id} has no picture.", itemId=item_id)


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
    def __init__(self) -> None:
        super().__init__("The catalog database is not reachable right now; try again shortly.")
