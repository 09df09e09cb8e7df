"""The catalog's HTTP routes: parse the request, call the service, shape the response."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response, status
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from catalog import repository, service
from catalog.dead_letters import service as dead_letters
from catalog.dead_letters.repository import refusals_are_undeliverable
from catalog.errors import MERGE_PATCH, NotAMergePatch
from catalog.events import CHECKOUT_ACCEPTED, UserCheckoutAccepted
from catalog.models import CatalogItem
from catalog.pictures import Picture, PictureStore
from catalog.read_cache import Loader, ReadCache
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
from eshop_common.conditions import (
    ENTITY_TAGS,
    Preconditions,
    none_match,
    parse_entity_tag,
    required_if_match,
)
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


class QueryParameters(BaseModel):
    """A route's query parameters, as a query model (`Annotated[Model, Query()]`). A name it
    does not have is 422 (`extra_forbidden`), never ignored: a misspelt `pagesize` would
    otherwise get the default page size without a word, and the OpenAPI document, which lists
    every parameter there is, would not tell the truth."""

    model_config = ConfigDict(extra="forbid")


class PageQuery(QueryParameters):
    """Which page of a list: `pageIndex` from 0, `pageSize` items each."""

    page_index: int = Field(0, alias="pageIndex", ge=0, le=PAGE_INDEX_MAX)
    page_size: int = Field(10, alias="pageSize", ge=1, le=PAGE_SIZE_MAX)


class ItemsQuery(PageQuery):
    brand_id: int | None = Field(None, alias="brandId", ge=1, le=INT32_MAX)
    type_id: int | None = Field(None, alias="typeId", ge=1, le=INT32_MAX)
    q: Annotated[
        str | None,
        Field(
            max_length=SEARCH_TEXT_MAX,
            pattern=NO_NUL_PATTERN,
            description="Words to look for in name and description",
        ),
        AfterValidator(_search_text),
    ] = None


class IdsQuery(QueryParameters):
    ids: Annotated[
        list[Id],
        Field(
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


# ---- reads: served through the read cache, revalidated by ETag ----------------------------------
#
# `async def` with one hand-off to the thread pool for the database work (a cache hit is the
# revision query alone): a `def` route with a session dependency costs four hand-offs, and
# validating and serialising the return value a fifth step; the routes return the stored JSON
# bytes as they are. The response models stay declared, for the OpenAPI document.

NO_CACHE = {
    "Cache-Control": {
        "description": "`no-cache` (RFC 9111 §5.2.2.4): a cache may store the response but must "
        "revalidate it (If-None-Match) before every use, so that a change is never served stale",
        "schema": {"type": "string", "enum": ["no-cache"]},
    }
}
REVISION_ETAG_HEADER = {
    "ETag": {
        "description": "A weak entity tag (RFC 9110 §8.8.1, §8.8.3) naming the catalog's revision, "
        '`W/"r42"`: it changes whenever anything the catalog shows does; send it back in '
        "If-None-Match to get a 304 while nothing has",
        "required": True,
        "schema": {"type": "string", "pattern": '^W/"r[0-9]+"$'},
    },
    **NO_CACHE,
}
IF_NONE_MATCH = {
    "parameters": [
        {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "description": "ETags of representations the client holds (RFC 9110 §13.1.2): if one "
            "matches the current one by weak comparison, or it is `*`, the answer is 304 with "
            "no body. A value that is not a list of entity tags is ignored (the answer is 200).",
            "schema": {"type": "string"},
        }
    ]
}


def _not_modified_response(description: str, etag: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "headers": {**etag, **NO_CACHE}}


REVISION_304 = _not_modified_response(
    "Not Modified (RFC 9110 §15.4.5): the catalog has not changed since the ETag in "
    "If-None-Match; no body",
    {"ETag": REVISION_ETAG_HEADER["ETag"]},
)


def _cached_reads(problems: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    return {200: {"headers": REVISION_ETAG_HEADER}, 304: REVISION_304, **problems}


async def _cached(request: Request, key: Hashable, load: Loader) -> Response:
    cache: ReadCache = request.state.read_cache
    entry = await run_in_threadpool(cache.read, key, load)
    if none_match(request.headers.getlist("if-none-match"), entry.tag):
        # RFC 9110 §15.4.5: the ETag and Cache-Control a 200 would have carried, no body.
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=entry.headers)
    return Response(entry.body, media_type="application/json", headers=entry.headers)


def revision_etag(revision: int) -> str:
    """Weak: it names a state of the whole catalog, not these exact bytes (another replica or
    release may serialise the same state differently), which is what §8.8.1 calls semantically
    equivalent. If-None-Match compares weakly anyway, and a weak tag can never pass an If-Match."""
    return f'W/"r{revision}"'


_PAGE = TypeAdapter(Page[ItemPublic])
_ITEMS = TypeAdapter(list[ItemPublic])
_BRANDS = TypeAdapter(list[BrandPublic])
_TYPES = TypeAdapter(list[TypePublic])


@router.get(
    "/items",
    response_model=Page[ItemPublic],
    responses=_cached_reads(problem_responses(422, 503)),
    openapi_extra=IF_NONE_MATCH,
)
async def read_items(request: Request, query: Annotated[ItemsQuery, Query()]) -> Response:
    """List catalog items a page at a time, filtered by brand, type and search text."""
    filter_ = ItemFilter(brand_id=query.brand_id, type_id=query.type_id, text=query.q)
    page_index, page_size = query.page_index, query.page_size

    def load(session: Session, revision: int) -> tuple[bytes, str]:
        page = service.list_items(session, filter_, page_index, page_size)
        body = Page[ItemPublic](
            page_index=page.page_index,
            page_size=page.page_size,
            count=page.count,
            items=[ItemPublic.from_model(item) for item in page.items],
        )
        return _PAGE.dump_json(body, by_alias=True), revision_etag(revision)

    return await _cached(request, ("items", filter_, page_index, page_size), load)


@router.get(
    "/items/by-ids",
    response_model=list[ItemPublic],
    responses=_cached_reads(problem_responses(422, 503)),
    openapi_extra=IF_NONE_MATCH,
)
async def read_items_by_ids(request: Request, query: Annotated[IdsQuery, Query()]) -> Response:
    """The items with the given ids, in the order asked for; unknown ids are left out."""
    ids = query.ids

    def load(session: Session, revision: int) -> tuple[bytes, str]:
        items = [ItemPublic.from_model(item) for item in service.get_items(session, ids)]
        return _ITEMS.dump_json(items, by_alias=True), revision_etag(revision)

    return await _cached(request, ("by-ids", tuple(ids)), load)


def _with_etag(item: CatalogItem, response: Response) -> ItemPublic:
    response.headers["ETag"] = service.etag(item)
    return ItemPublic.from_model(item)


@router.get(
    "/items/{item_id:int}",
    response_model=ItemPublic,
    responses={
        200: {
            "description": "The item",
            "headers": {**ETAG_HEADER, **NO_CACHE},
            "links": ITEM_LINKS,
        },
        304: _not_modified_response(
            "Not Modified (RFC 9110 §15.4.5): the item is still at the version in "
            "If-None-Match; no body",
            ETAG_HEADER,
        ),
        **problem_responses(404, 422, 503),
    },
    openapi_extra=IF_NONE_MATCH,
)
async def read_item(request: Request, item_id: ItemId) -> Response:
    """One catalog item, with its version as the ETag."""

    def load(session: Session, _revision: int) -> tuple[bytes, str]:
        item = service.get_item(session, item_id)
        return ItemPublic.from_model(item).model_dump_json(by_alias=True).encode(), service.etag(
            item
        )

    return await _cached(request, ("item", item_id), load)


def _not_modified(
    picture: Picture, if_none_match: str | None, if_modified_since: str | None
) -> bool:
    # RFC 9110 §13.1.3: If-Modified-Since is evaluated only without If-None-Match.
    if if_none_match is not None:
        return none_match([if_none_match], parse_entity_tag(picture.etag))
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


@router.get(
    "/brands",
    response_model=list[BrandPublic],
    responses=_cached_reads(problem_responses(503)),
    openapi_extra=IF_NONE_MATCH,
)
async def read_brands(request: Request) -> Response:
    """Every brand, by name."""

    def load(session: Session, revision: int) -> tuple[bytes, str]:
        brands = [BrandPublic.from_model(brand) for brand in service.list_brands(session)]
        return _BRANDS.dump_json(brands, by_alias=True), revision_etag(revision)

    return await _cached(request, ("brands",), load)


@router.get(
    "/types",
    response_model=list[TypePublic],
    responses=_cached_reads(problem_responses(503)),
    openapi_extra=IF_NONE_MATCH,
)
async def read_types(request: Request) -> Response:
    """Every item type, by name."""

    def load(session: Session, revision: int) -> tuple[bytes, str]:
        types = [TypePublic.from_model(type_) for type_ in service.list_types(session)]
        return _TYPES.dump_json(types, by_alias=True), revision_etag(revision)

    return await _cached(request, ("types",), load)


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
