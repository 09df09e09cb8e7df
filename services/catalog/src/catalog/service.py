"""The catalog's rules: paging, lookups, and what a valid change to an item is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from catalog import repository
from catalog.errors import InvalidField, ItemNotFound, PictureNotFound, StaleItem
from catalog.events import (
    CHECKOUT_ACCEPTED,
    PRICE_CHANGED,
    PRODUCT_DELETED,
    RESERVATION_REJECTED,
    STOCK_RESERVED,
    EventModel,
    ProductDeleted,
    ProductPriceChanged,
    Shortage,
    StockReservationRejected,
    StockReserved,
    UserCheckoutAccepted,
)
from catalog.models import CatalogBrand, CatalogItem, CatalogType
from catalog.pictures import Picture, PictureStore
from catalog.repository import ItemFilter
from catalog.schemas import ItemPatch, ItemWrite
from eshop_common.conditions import Preconditions, strong_etag


@dataclass(frozen=True)
class ItemPage:
    page_index: int
    page_size: int
    count: int
    items: Sequence[CatalogItem]


def list_items(session: Session, filter_: ItemFilter, page_index: int, page_size: int) -> ItemPage:
    count = repository.count_items(session, filter_)
    offset = page_index * page_size
    items = repository.page_items(session, filter_, offset, page_size) if offset < count else []
    return ItemPage(page_index, page_size, count, items)


def get_item(session: Session, item_id: int) -> CatalogItem:
    item = repository.get_item(session, item_id)
    if item is None:
        raise ItemNotFound(item_id)
    return item


def get_items(session: Session, ids: Sequence[int]) -> list[CatalogItem]:
    """The items that exist among `ids`, in the order asked for; unknown ids are left out."""
    wanted = list(dict.fromkeys(ids))
    found = {item.id: item for item in repository.get_items(session, wanted)}
    return [found[i] for i in wanted if i in found]


def get_picture(session: Session, pictures: PictureStore, item_id: int) -> Picture:
    exists, file_name = repository.get_picture_file_name(session, item_id)
    if not exists:
        raise ItemNotFound(item_id)
    picture = pictures.get(file_name) if file_name else None
    if picture is None:
        raise PictureNotFound(item_id)
    return picture


def etag(item: CatalogItem) -> str:
    """The item's strong entity tag: its version, which every change moves (RFC 9110 §8.8.3)."""
    return strong_etag(str(item.version))


def _check_picture(pictures: PictureStore, file_name: str | None) -> None:
    if file_name is not None and pictures.get(file_name) is None:
        raise InvalidField("pictureFileName", f"no picture named {file_name!r}")


def _apply(item: CatalogItem, changes: Mapping[str, Any]) -> None:
    # The keys are ItemWrite's and ItemPatch's fields, which are the model's attribute names.
    for name, value in changes.items():
        setattr(item, name, value)


def create_item(session: Session, pictures: PictureStore, data: ItemWrite) -> CatalogItem:
    _check_picture(pictures, data.picture_file_name)
    item = CatalogItem()
    _apply(item, data.model_dump())
    return repository.save_item(session, item)


def update_item(
    session: Session,
    pictures: PictureStore,
    item_id: int,
    data: ItemWrite,
    condition: Preconditions,
) -> CatalogItem:
    """Replace every writable field, if the item is at a version `condition` (If-Match) allows.

    Raises ItemNotFound (404), StaleItem (412), InvalidField (422), DuplicateItemName (409)."""
    _check_picture(pictures, data.picture_file_name)
    return _change(session, item_id, data.model_dump(), condition)


def patch_item(
    session: Session,
    pictures: PictureStore,
    item_id: int,
    patch: ItemPatch,
    condition: Preconditions,
) -> CatalogItem:
    """Change the fields the merge patch names and only those (RFC 7396), under `condition`.

    Raises ItemNotFound (404), StaleItem (412), InvalidField (422), DuplicateItemName (409)."""
    if "picture_file_name" in patch:
        _check_picture(pictures, patch["picture_file_name"])
    return _change(session, item_id, patch, condition)


def _change(
    session: Session, item_id: int, changes: Mapping[str, Any], condition: Preconditions
) -> CatalogItem:
    item = repository.get_item_to_change(session, item_id)
    if item is None:
        # RFC 9110 §13.2.1: without the condition this would not be a 2xx either, so it is
        # not evaluated; the answer is the 404.
        raise ItemNotFound(item_id)
    if not condition.passes(str(item.version)):
        raise StaleItem(item_id)
    old_price = item.price
    _apply(item, changes)
    if item.price != old_price:
        # Same transaction as the change: the event exists if and only if the price changed.
        item.price_version += 1
        event = ProductPriceChanged(
            product_id=item.id, price=item.price, old_price=old_price,
            price_version=item.price_version,
        )  # fmt: skip
        repository.add_outbox_message(
            session, PRICE_CHANGED, "ProductPriceChanged", _payload(event)
        )
    return repository.save_item(session, item)


class ReservationOutcome(StrEnum):
    RESERVED = "reserved"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"


class _Rejected(Exception):
    def __init__(self, shortages: list[Shortage]) -> None:
        self.shortages = shortages


def reserve_stock(
    factory: sessionmaker[Session], event_id: str, checkout: UserCheckoutAccepted
) -> ReservationOutcome:
    """Take every line's quantity off stock in one transaction, or none of them.

    The event id is recorded in the same transaction, with StockReserved in the outbox, so a
    second delivery changes nothing.
    A refusal is recorded (with its StockReservationRejected event in the outbox) separately,
    after the partial reservation has been rolled back.
    """
    wanted: dict[int, int] = {}
    for line in checkout.items:
        wanted[line.product_id] = wanted.get(line.product_id, 0) + line.quantity
    try:
        with repository.transaction(factory) as session:
            if not repository.claim_event(session, event_id, CHECKOUT_ACCEPTED, "reserved"):
                return ReservationOutcome.DUPLICATE
            shortages = []
            # In id order, so two reservations lock the rows they share in the same order.
            for product_id, quantity in sorted(wanted.items()):
                if not repository.take_stock(session, product_id, quantity):
                    available = repository.available_stock(session, product_id)
                    shortages.append(
                        Shortage(product_id=product_id, requested=quantity, available=available)
                    )
            if shortages:
                raise _Rejected(shortages)
            reserved = StockReserved(request_id=checkout.request_id, buyer_id=checkout.buyer_id)
            repository.add_outbox_message(
                session, STOCK_RESERVED, "StockReserved", _payload(reserved)
            )
            return ReservationOutcome.RESERVED
    except _Rejected as rejected:
        shortages = rejected.shortages
    with repository.transaction(factory) as session:
        if not repository.claim_event(session, event_id, CHECKOUT_ACCEPTED, "rejected"):
            return ReservationOutcome.DUPLICATE
        event = StockReservationRejected(
            request_id=checkout.request_id,
            buyer_id=checkout.buyer_id,
            reason="not enough stock",
            shortages=shortages,
            items=checkout.items,
        )
        repository.add_outbox_message(
            session, RESERVATION_REJECTED, "StockReservationRejected", _payload(event)
        )
    return ReservationOutcome.REJECTED


def _payload(event: EventModel) -> dict[str, Any]:
    return event.model_dump(mode="json", by_alias=True)


def delete_item(session: Session, item_id: int) -> None:
    """Delete the item and, in the same transaction, put ProductDeleted in the outbox, so
    baskets holding it learn that it can no longer be bought. Raises ItemNotFound (404)."""
    if not repository.delete_item(session, item_id):
        raise ItemNotFound(item_id)
    repository.add_outbox_message(
        session, PRODUCT_DELETED, "ProductDeleted", _payload(ProductDeleted(product_id=item_id))
    )


def list_brands(session: Session) -> Sequence[CatalogBrand]:
    return repository.list_brands(session)


def list_types(session: Session) -> Sequence[CatalogType]:
    return repository.list_types(session)
