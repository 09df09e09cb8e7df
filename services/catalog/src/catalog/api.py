"""The catalog's HTTP routes: parse the request, call the service, shape the response."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response, status
from pydantic import AfterValidator, BeforeValidator
from sqlalchemy.orm import Session

from catalog import repository, service
from catalog.dead_letters import service as dead_letters
from catalog.dead_letters.repository import refusals_are_undeliverable
from catalog.errors import MERGE_PATCH, NotAMergePatch
from catalog.events import CHECKOUT_ACCEPTED, UserCheckoutAccepted
from catalog.models import CatalogItem
from catalog.pictures import Picture, PictureStore
from catalog.repository import ItemFilter
from catalog.schemas import (
    BY_IDS_MAX,
    INT32_MAX,
    NO_NUL_PATTERN,
    PAGE_SIZE_MAX,
    SEARCH_TEXT_MAX,
    BrandPublic,
    Id,
    ItemCreate,
    ItemPatch,
    ItemPublic,
    ItemUpdate,
    Page,
    TypePublic,
    storable_text,
)
from eshop_common.auth import AdminUser, FromSidecar
from eshop_common.conditions import ENTITY_TAGS, Preconditions, required_if_match
from eshop_common.events import RETRY, SUCCESS, EventAck, Undeliverable, parse_event
from eshop_common.problems import ServiceUnavailable, problem_responses

log = logging.getLogger(__name__)

PAGE_INDEX_MAX = 1_000_000


def get_session(request: Request) -> Iterator[Session]:
    with repository.transaction(request.state.sessionmaker) as session:
        yield session


async def get_pictures(request: Request) -> PictureStore:
    store: PictureStore = request.state.pictures
    return store


# scope="function": the transaction commits before the response is sent, so a failed commit is
# reported to the client instead of being lost after a 2xx.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
PicturesDep = Annotated[PictureStore, Depends(get_pictures)]
# Routes spell it `{item_id:int}`: a path segment that is not digits names no item (404), and
# `/items/by-ids` never reaches the item routes, so a PUT there is 405, not a bad id.
ItemId = Annotated[int, Path(ge=1, le=INT32_MAX, description="The item's id")]


def _split_ids(value: Any) -> Any:
    # ?ids=1,2,3 and ?ids=1&ids=2 both arrive as a list of strings.
    if isinstance(value, list):
        return [part.strip() for entry in value for part in str(entry).split(",")]
    return value


def _search_text(value: str | None) -> str | None:
    if value is None:
        return None
    return storable_text(value).strip() or None


SearchText = Annotated[
    str | None,
    Query(
        max_length=SEARCH_TEXT_MAX,
        pattern=NO_NUL_PATTERN,
        description="Words to look for in name and description",
    ),
    AfterValidator(_search_text),
]
IdList = Annotated[
    list[Id],
    Query(
        min_length=1,
        max_length=BY_IDS_MAX,
        description=f"Comma-separated item ids, at most {BY_IDS_MAX}",
    ),
    BeforeValidator(_split_ids),
]

router = APIRouter(prefix="/api/catalog", tags=["catalog"])

# OpenAPI links (3.1 §4.8.20): what a client can do next with an item it read, created or changed;
# a change sends back the ETag it was given.
_ID = {"item_id": "$response.body#/id"}
_ID_AND_VERSION = {**_ID, "header.If-Match": "$response.header.ETag"}
ITEM_LINKS = {
    "ReadItem": {"operationId": "read_item", "parameters": _ID},
    "ReadItemPicture": {"operationId": "read_item_picture", "parameters": _ID},
    "UpdateItem": {"operationId": "update_item", "parameters": _ID_AND_VERSION},
    "PatchItem": {"operationId": "patch_item", "parameters": _ID_AND_VERSION},
    "DeleteItem": {"operationId": "delete_item", "parameters": _ID},
}
ETAG_HEADER = {
    "ETag": {
        "description": 'The item\'s version as a strong entity tag (RFC 9110 §8.8.3), "7" for '
        "version 7; a change to the item sends it back in If-Match",
        "required": True,
        "schema": {"type": "string", "pattern": '^"[0-9]+"$'},
    }
}
# Declared here rather than as a Header() parameter: absent, it is a 428 (RFC 6585 §3), not the
# 422 FastAPI gives a missing required parameter.
IF_MATCH_REQUIRED = {
    "parameters": [
        {
            "name": "If-Match",
            "in": "header",
            "required": True,
            "description": 'The ETag the change is based on (`"7"`, from GET, POST, PUT or PATCH '
            "of the item). The change is made only if the item is still at that version "
            "(RFC 9110 §13.1.1), else 412; `*` changes whatever version there is. Without it: 428.",
            "schema": {"type": "string", "pattern": ENTITY_TAGS},
        }
    ]
}
# What a change to an item answers besides its body (RFC 9110 §13.1.1, RFC 6585 §3).
CHANGE_PROBLEMS = problem_responses(400, 401, 403, 404, 409, 412, 422, 428, 503)


def get_item_condition(request: Request, item_id: ItemId) -> Preconditions:
    """Raises ConditionRequired (428) without If-Match, MalformedPrecondition (400)."""
    return required_if_match(
        request.headers.getlist("if-match"),
        f"Changing catalog item {item_id} needs If-Match with the ETag of the version the "
        f"change is based on (GET /api/catalog/items/{item_id} gives it), so that a change made "
        "since then, a stock reservation included, is not written over.",
        itemId=item_id,
    )


def get_merge_patch(request: Request) -> None:
    """Raises NotAMergePatch (415, with Accept-Patch) for a body of another media type."""
    content_type = request.headers.get("content-type")
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != MERGE_PATCH:
        raise NotAMergePatch(content_type)


IfMatch = Annotated[Preconditions, Depends(get_item_condition)]


@router.get("/items", responses=problem_responses(422, 503))
def read_items(
    session: SessionDep,
    page_index: Annotated[int, Query(alias="pageIndex", ge=0, le=PAGE_INDEX_MAX)] = 0,
    page_size: Annotated[int, Query(alias="pageSize", ge=1, le=PAGE_SIZE_MAX)] = 10,
    brand_id: Annotated[int | None, Query(alias="brandId", ge=1, le=INT32_MAX)] = None,
    type_id: Annotated[int | None, Query(alias="typeId", ge=1, le=INT32_MAX)] = None,
    q: SearchText = None,
) -> Page[ItemPublic]:
    """List catalog items a page at a time, filtered by brand, type and search text."""
    filter_ = ItemFilter(brand_id=brand_id, type_id=type_id, text=q)
    page = service.list_items(session, filter_, page_index, page_size)
    return Page(
        page_index=page.page_index,
        page_size=page.page_size,
        count=page.count,
        items=[ItemPublic.from_model(item) for item in page.items],
    )


@router.get("/items/by-ids", responses=problem_responses(422, 503))
def read_items_by_ids(session: SessionDep, ids: IdList) -> list[ItemPublic]:
    """The items with the given ids, in the order asked for; unknown ids are left out."""
    return [ItemPublic.from_model(item) for item in service.get_items(session, ids)]


def _with_etag(item: CatalogItem, response: Response) -> ItemPublic:
    response.headers["ETag"] = service.etag(item)
    return ItemPublic.from_model(item)


@router.get(
    "/items/{item_id:int}",
    responses={
        200: {"description": "The item", "headers": ETAG_HEADER, "links": ITEM_LINKS},
        **problem_responses(404, 422, 503),
    },
)
def read_item(session: SessionDep, item_id: ItemId, response: Response) -> ItemPublic:
    """One catalog item, with its version as the ETag."""
    return _with_etag(service.get_item(session, item_id), response)


def _not_modified(
    picture: Picture, if_none_match: str | None, if_modified_since: str | None
) -> bool:
    if if_none_match is not None:
        tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return "*" in tags or picture.etag in tags
    return if_modified_since is not None and if_modified_since == picture.last_modified


@router.get(
    "/items/{item_id:int}/picture",
    response_class=Response,
    responses={
        200: {"content": {"image/svg+xml": {}, "image/png": {}, "image/jpeg": {}}},
        304: {"description": "The client's copy is current"},
        **problem_responses(404, 422, 503),
    },
)
def read_item_picture(
    session: SessionDep,
    pictures: PicturesDep,
    item_id: ItemId,
    if_none_match: Annotated[str | None, Header(max_length=1024)] = None,
    if_modified_since: Annotated[str | None, Header(max_length=128)] = None,
) -> Response:
    """The item's picture, cacheable and revalidated by ETag."""
    picture = service.get_picture(session, pictures, item_id)
    headers = {
        "ETag": picture.etag,
        "Last-Modified": picture.last_modified,
        "Cache-Control": f"public, max-age={pictures.max_age}",
        # SVG is a document format: never let one run script or be sniffed into something else.
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
        "X-Content-Type-Options": "nosniff",
    }
    if _not_modified(picture, if_none_match, if_modified_since):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(picture.content, media_type=picture.content_type, headers=headers)


@router.get("/brands", responses=problem_responses(503))
def read_brands(session: SessionDep) -> list[BrandPublic]:
    """Every brand, by name."""
    return [BrandPublic.from_model(brand) for brand in service.list_brands(session)]


@router.get("/types", responses=problem_responses(503))
def read_types(session: SessionDep) -> list[TypePublic]:
    """Every item type, by name."""
    return [TypePublic.from_model(type_) for type_ in service.list_types(session)]


@router.post(
    "/items",
    status_code=status.HTTP_201_CREATED,
    responses={
        201: {"description": "The new item", "headers": ETAG_HEADER, "links": ITEM_LINKS},
        **problem_responses(400, 401, 403, 409, 422, 503),
    },
)
def create_item(
    _admin: AdminUser,
    session: SessionDep,
    pictures: PicturesDep,
    data: ItemCreate,
    response: Response,
) -> ItemPublic:
    """Add an item to the catalog (admin only)."""
    item = service.create_item(session, pictures, data)
    response.headers["Location"] = f"/api/catalog/items/{item.id}"
    return _with_etag(item, response)


@router.put(
    "/items/{item_id:int}",
    responses={
        200: {"description": "The item as it is now", "headers": ETAG_HEADER, "links": ITEM_LINKS},
        **CHANGE_PROBLEMS,
    },
    openapi_extra=IF_MATCH_REQUIRED,
)
def update_item(
    _admin: AdminUser,
    condition: IfMatch,
    session: SessionDep,
    pictures: PicturesDep,
    item_id: ItemId,
    data: ItemUpdate,
    response: Response,
) -> ItemPublic:
    """Replace an item's data (admin only), if it is still at the version If-Match names."""
    item = service.update_item(session, pictures, item_id, data, condition)
    return _with_etag(item, response)


@router.patch(
    "/items/{item_id:int}",
    responses={
        200: {"description": "The item as it is now", "headers": ETAG_HEADER, "links": ITEM_LINKS},
        **CHANGE_PROBLEMS,
        415: {
            **problem_responses(415)[415],
            "description": f"The body is not a JSON merge patch ({MERGE_PATCH})",
            "headers": {
                "Accept-Patch": {
                    "description": "The patch format the item takes (RFC 5789 §3.1)",
                    "schema": {"type": "string"},
                }
            },
        },
    },
    openapi_extra=IF_MATCH_REQUIRED,
)
def patch_item(
    _admin: AdminUser,
    _merge_patch: Annotated[None, Depends(get_merge_patch)],
    condition: IfMatch,
    session: SessionDep,
    pictures: PicturesDep,
    item_id: ItemId,
    patch: Annotated[ItemPatch, Body(media_type=MERGE_PATCH)],
    response: Response,
) -> ItemPublic:
    """Change only the fields the merge patch names (admin only), if the item is still at the
    version If-Match names."""
    item = service.patch_item(session, pictures, item_id, patch, condition)
    return _with_etag(item, response)


@router.delete(
    "/items/{item_id:int}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401, 403, 404, 422, 503),
)
def delete_item(_admin: AdminUser, session: SessionDep, item_id: ItemId) -> None:
    """Remove an item from the catalog (admin only)."""
    service.delete_item(session, item_id)


events_router = APIRouter(
    prefix="/events",
    tags=["events"],
    dependencies=[FromSidecar],
    responses=problem_responses(400, 401, 422),
)


@events_router.post("/user-checkout-accepted")
def on_user_checkout_accepted(request: Request, payload: Annotated[Any, Body()]) -> EventAck:
    """Reserve stock for a checkout; called by the sidecar for each UserCheckoutAccepted."""
    factory = request.state.sessionmaker
    try:
        event_id, checkout = parse_event(payload, UserCheckoutAccepted)
        with refusals_are_undeliverable(event_id):
            outcome = service.reserve_stock(factory, event_id, checkout)
    except Undeliverable as exc:
        return dead_letters.dropped(factory, CHECKOUT_ACCEPTED, exc)
    except ServiceUnavailable:
        # A database that is away, a row locked past the statement timeout, or every pooled
        # connection busy: the sidecar delivers it again, for minutes (resiliency.yaml).
        log.warning("checkout %s: database unavailable or busy, answering RETRY", event_id)
        return RETRY
    log.info("checkout %s: stock %s", checkout.request_id, outcome)
    return SUCCESS
