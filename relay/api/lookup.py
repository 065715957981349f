"""``GET /v1/lookup``: messages by relay id, drop-in integer id or phone number
(:mod:`relay.results.lookup`), each with its record and its history of states."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from relay.api.auth import authorize, bearer
from relay.api.schemas import Record, StreamEvent, error_responses
from relay.api.state import ApiState, api_state
from relay.apikeys import READ
from relay.results.lookup import LIMIT_DEFAULT, SCAN_DEFAULT, SCAN_MAX

router = APIRouter(prefix="/v1", tags=["results"], dependencies=[Security(bearer)])


class FoundMessage(Record):
    """A message found: its record, how it was found, and its events in the scanned window."""

    model_config = ConfigDict(extra="allow")

    dropin_id: int | None = Field(None, description="Its /getdata/ integer id, if it has one.")
    via: str = Field(description="id, dropin or phone: what the query matched.")
    events: list[StreamEvent] = Field(
        description="Its events among those scanned, oldest first (the history of states; "
        "the record's `times` keep the last time of each state for as long as it lives)."
    )


class LookupAnswer(BaseModel):
    """What a lookup found, newest first, and how far back it read the events stream."""

    query: str
    kinds: list[str] = Field(description="What the query may be: id, dropin, phone.")
    messages: list[FoundMessage]
    scanned_events: int = Field(description="Events read, newest first.")
    scanned_since_ms: int | None = Field(description="Time (ms) of the oldest event read.")
    complete: bool = Field(description="True when the whole stream was read.")


@router.get(
    "/lookup",
    summary="Find messages by relay id, drop-in id or phone number",
    response_model=LookupAnswer,
    responses=error_responses(401, 403, 422, 503),
)
async def lookup(
    request: Request,
    q: Annotated[
        str,
        Query(
            min_length=1,
            max_length=100,
            description="A relay id, an integer id of /getdata/, or a phone number (its "
            "digits: +49 157 52982212, 015752982212 and 4915752982212 all match).",
        ),
    ],
    limit: Annotated[int, Query(ge=1, le=100, description="At most this many.")] = LIMIT_DEFAULT,
    scan: Annotated[
        int,
        Query(
            ge=0,
            le=SCAN_MAX,
            description="Events read back from the newest to find numbers and histories.",
        ),
    ] = SCAN_DEFAULT,
) -> JSONResponse:
    """A relay id or drop-in id names one message; a phone number finds the messages to that
    number with a state change among the last `scan` events (there is no index by number:
    the answer says how far back it looked)."""
    api = api_state(request)
    api.redis_usable()
    return await run_in_threadpool(_lookup, request, api, q, limit, scan)


def _lookup(request: Request, api: ApiState, q: str, limit: int, scan: int) -> JSONResponse:
    from relay.results.lookup import lookup as find

    authorize(request, api.keys, READ)
    return JSONResponse(find(api.relay.ctx, q, limit=limit, scan=scan).to_dict())
