"""`/healthz` says the process is alive; `/readyz` asks the service whether its dependencies are."""

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request

from eshop_common.problems import problem_responses

# Raises a `Problem` (usually ServiceUnavailable) when a dependency is not ready.
ReadinessCheck = Callable[[Request], Awaitable[None]]

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@router.get("/readyz", responses=problem_responses(503))
async def readyz(request: Request) -> dict[str, str]:
    """Every dependency the service needs answers."""
    check: ReadinessCheck = request.app.state.readiness_check
    await check(request)
    return {"status": "ready"}
