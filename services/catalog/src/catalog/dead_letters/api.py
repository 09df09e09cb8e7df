"""Dead-letter routes: the `deadletter` topic's handler, and what an admin sees and replays."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request, status
from pydantic import Field

from catalog.api import PageQuery, SessionDep
from catalog.dead_letters import service
from catalog.dead_letters.models import EVENT_ID_MAX, TOPIC_MAX
from catalog.dead_letters.schemas import DeadLetterPublic
from catalog.errors import DatabaseUnavailable
from catalog.schemas import NO_NUL_PATTERN, Page
from eshop_common.auth import AdminUser, FromSidecar
from eshop_common.events import RETRY, SUCCESS, EventAck
from eshop_common.problems import UnprocessableContent, problem_responses

LetterId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The dead letter's id")]


async def each_query_parameter_once(request: Request) -> None:
    """Raises UnprocessableContent (422) for a query parameter given more than once: each is
    one value, and taking one of several would answer a question that was not asked."""
    params = request.query_params
    repeated = sorted({name for name in params if len(params.getlist(name)) > 1})
    if repeated:
        raise UnprocessableContent(
            f"Given more than once: {', '.join(repeated)}.",
            errors=[
                {"field": n, "in": "query", "message": "given more than once"} for n in repeated
            ],
        )


router = APIRouter(
    prefix="/api/catalog/admin/dead-letters",
    tags=["dead letters"],
    dependencies=[Depends(each_query_parameter_once)],
    responses=problem_responses(401, 403, 422, 503),
)


class DeadLettersQuery(PageQuery):
    topic: str | None = Field(
        None, max_length=TOPIC_MAX, pattern=NO_NUL_PATTERN, description="Only this topic's"
    )
    event_id: str | None = Field(
        None,
        alias="eventId",
        max_length=EVENT_ID_MAX,
        pattern=NO_NUL_PATTERN,
        description="Only the letter with this CloudEvent id",
    )


@router.get("")
def read_dead_letters(
    _admin: AdminUser,
    session: SessionDep,
    query: Annotated[DeadLettersQuery, Query()],
) -> Page[DeadLetterPublic]:
    """Dead letters, the most recently seen first (admin only)."""
    count, rows = service.list_letters(
        session, query.topic, query.event_id, query.page_index, query.page_size
    )
    return Page(
        page_index=query.page_index,
        page_size=query.page_size,
        count=count,
        items=[DeadLetterPublic.from_model(row) for row in rows],
    )


@router.get("/{letter_id:int}", responses=problem_responses(404))
def read_dead_letter(
    _admin: AdminUser, session: SessionDep, letter_id: LetterId
) -> DeadLetterPublic:
    """One dead letter (admin only)."""
    return DeadLetterPublic.from_model(service.get_letter(session, letter_id))


@router.post(
    "/{letter_id:int}/replay",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        202: {"description": "Published again; the letter with its replay counted"},
        **problem_responses(404, 409),
    },
)
def replay_dead_letter(
    _admin: AdminUser, request: Request, letter_id: LetterId
) -> DeadLetterPublic:
    """Publish a dead letter's event again, to its topic with its CloudEvent id (admin only)."""
    letter = service.replay(
        request.state.sessionmaker, request.state.publisher, letter_id,
        request.state.event_retention,
    )  # fmt: skip
    return DeadLetterPublic.from_model(letter)


events_router = APIRouter(
    prefix="/events",
    tags=["events"],
    dependencies=[FromSidecar],
    responses=problem_responses(400, 401, 422),
)


@events_router.post("/dead-letters")
def on_dead_letter(request: Request, payload: Annotated[Any, Body()]) -> EventAck:
    """Record a dead letter; called by the sidecar for each message on the `deadletter` topic.
    Never DROP: this subscription's own dead letters go back to its topic."""
    try:
        service.record(request.state.sessionmaker, payload)
    except DatabaseUnavailable:
        return RETRY
    return SUCCESS
