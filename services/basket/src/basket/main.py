"""The basket service: FastAPI app, lifespan and readiness."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

from fastapi import FastAPI, Request

from basket import api
from basket.config import Settings
from basket.service import BasketService
from basket.state import DaprSidecar, StoreBreaker
from eshop_common.app import create_app, freeze_startup_objects
from eshop_common.problems import ServiceUnavailable
from eshop_common.sidecar import Sidecar

settings = Settings()


class State(TypedDict):
    sidecar: DaprSidecar
    baskets: BasketService


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[State]:
    async with Sidecar.from_settings(settings, owner="basket") as client:
        sidecar = DaprSidecar(
            client,
            store=settings.state_store_name,
            catalog_app_id=settings.catalog_app_id,
            pubsub=settings.pubsub_name,
            breaker=StoreBreaker(
                settings.store_breaker_threshold, settings.store_breaker_open_seconds
            ),
        )
        baskets = BasketService(sidecar, settings)
        sweeper = asyncio.create_task(baskets.sweep_forever())
        freeze_startup_objects()
        yield {"sidecar": sidecar, "baskets": baskets}
        sweeper.cancel()
        await asyncio.gather(sweeper, return_exceptions=True)
        await baskets.close()  # before the client closes: nothing of the service outlives it


async def readiness(request: Request) -> None:
    sidecar: DaprSidecar = request.state.sidecar
    if not await sidecar.is_ready():
        raise ServiceUnavailable("The Dapr sidecar or one of its components is not ready.")


app = create_app(
    app_id="basket-api",
    title="eShop basket API",
    description="Each buyer's basket, kept as one key/value entry through the Dapr state API.",
    settings=settings,
    readiness_check=readiness,
    lifespan=lifespan,
)
app.include_router(api.router)
app.include_router(api.events_router)
