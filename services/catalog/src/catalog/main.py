"""The catalog service: app, lifespan (engine, sessionmaker, pictures) and readiness."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypedDict

from fastapi import FastAPI, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from catalog import repository
from catalog.api import events_router, router
from catalog.config import Settings
from catalog.dead_letters import api as dead_letters
from catalog.metrics import OUTBOX
from catalog.outbox import OutboxRelay
from catalog.pictures import PictureStore
from catalog.publisher import Publisher
from catalog.read_cache import ReadCache
from eshop_common import telemetry
from eshop_common.app import create_app, extend_openapi, freeze_startup_objects
from eshop_common.sidecar import Sidecar

APP_ID = "catalog-api"


class State(TypedDict):
    engine: Engine
    sessionmaker: sessionmaker[Session]
    pictures: PictureStore
    read_cache: ReadCache
    publisher: Publisher
    event_retention: timedelta


async def database_ready(request: Request) -> None:
    await run_in_threadpool(repository.ping, request.state.engine)


def create_catalog_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[State]:
        engine = repository.make_engine(settings)
        telemetry.instrument_engine(engine)
        factory = repository.make_sessionmaker(engine)
        revisions = repository.make_revision_engine(settings)
        telemetry.instrument_engine(revisions)
        retention = timedelta(seconds=settings.event_retention_seconds)
        async with Sidecar.from_settings(settings, owner="catalog") as sidecar:
            # The relay's thread and the sync routes publish on this loop (catalog.publisher).
            publisher = Publisher(
                sidecar, asyncio.get_running_loop(), pubsub=settings.pubsub_name,
                timeout_seconds=settings.dapr_timeout_seconds,
            )  # fmt: skip
            relay = OutboxRelay(factory, publisher, settings.outbox_poll_seconds, retention)
            if settings.outbox_relay_enabled:
                relay.start()
            OUTBOX.watch(factory)
            freeze_startup_objects()
            try:
                yield {
                    "engine": engine,
                    "sessionmaker": factory,
                    "pictures": PictureStore(
                        settings.pictures_dir, max_age=settings.picture_max_age
                    ),
                    "read_cache": ReadCache(revisions, factory, settings.read_cache_bytes),
                    "publisher": publisher,
                    "event_retention": retention,
                }
            finally:
                if settings.outbox_relay_enabled:
                    # In a thread: a publish the relay waits for needs this loop to finish.
                    await asyncio.to_thread(relay.stop)
                OUTBOX.forget(factory)
                revisions.dispose()
                engine.dispose()

    app = create_app(
        app_id=APP_ID,
        title="eShop catalog",
        description="Products, brands and types: relational data in PostgreSQL via SQLAlchemy 2.",
        settings=settings,
        readiness_check=database_ready,
        lifespan=lifespan,
    )
    app.include_router(router)
    app.include_router(events_router)
    app.include_router(dead_letters.router)
    app.include_router(dead_letters.events_router)
    pictures = PictureStore(settings.pictures_dir, max_age=settings.picture_max_age)
    extend_openapi(app, lambda document: name_the_pictures(document, pictures.names()))
    return app


def name_the_pictures(document: dict[str, Any], names: list[str]) -> None:
    """An item may name only a picture the catalog ships with: say which, so that the document
    refuses what the service refuses (anything else is 422)."""
    for model in ("ItemCreate", "ItemUpdate", "ItemPatch"):
        member = document["components"]["schemas"][model]["properties"]["pictureFileName"]
        for choice in member["anyOf"]:
            if choice.get("type") == "string":
                choice["enum"] = names


app = create_catalog_app()
