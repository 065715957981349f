"""The shapes of the HTTP API, for the OpenAPI document (request bodies are checked by the
producer's own validation, :mod:`relay.produce.validation`, not by these models: one set of
rules for every door)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MESSAGE_EXAMPLE: dict[str, Any] = {
    "sendto": "+4915752982212",
    "body": "Your code is 4711",
    "device_id": 260,
    "sim": 0,
    "urgent": True,
}


class MessageIn(BaseModel):
    """One message to send, with the gateway's field names."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [MESSAGE_EXAMPLE]})

    sendto: str = Field(description="One recipient; E.164 with RELAY_DEFAULT_REGION set.")
    body: str = Field(description="The text (at most RELAY_BODY_MAX characters).")
    device_id: int = Field(ge=1, description="Phone (device) that sends it.")
    sim: int = Field(0, ge=0, le=5, description="SIM slot of the phone.")
    urgent: bool = Field(False, description="Urgent (OTP) messages go ahead of bulk ones.")
    customerid: int | None = Field(None, ge=0, description="Your own id, kept with the message.")
    timetosend: str | float | None = Field(
        None,
        description="When to send: ISO 8601 (no offset: UTC) or epoch seconds; past: now.",
    )
    key: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Idempotency key (or the Idempotency-Key header): the same key gives "
        "the first id again, with 200, for RELAY_IDEMPOTENCY_TTL seconds.",
    )
    ttl: float | None = Field(
        None,
        gt=0,
        description="Seconds from now within which it must be submitted to the gateway, "
        'else it ends `expired` with the error "not submitted within its ttl", never sent '
        "(default RELAY_DEFAULT_TTL; e.g. 300 for a one-time code).",
    )


class BatchIn(BaseModel):
    """Messages to send together: all stored, or none."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "messages": [
                        {"sendto": "+4915752982212", "body": "Spring sale!", "device_id": 260},
                        {"sendto": "+4915752982213", "body": "Spring sale!", "device_id": 260},
                    ]
                }
            ]
        },
    )

    messages: list[MessageIn] = Field(description="At most RELAY_API_BATCH_MAX messages.")


class Accepted(BaseModel):
    """A message relay holds now (202), or held already under the same key (200)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"id": "0mhx3k2p4a7fq1", "state": "queued"}]}
    )

    id: str
    state: str


class BatchAccepted(BaseModel):
    """The ids of a batch, in input order."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"ids": ["0mhx3k2p4a7fq1", "0mhx3k2p4a7fq2"]}]}
    )

    ids: list[str]


class Record(BaseModel):
    """A message record (``relay status --json``)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "id": "0mhx3k2p4a7fq1",
                    "state": "delivered",
                    "final": True,
                    "sendto": "+4915752982212",
                    "body": "Your code is 4711",
                    "device_id": 260,
                    "sim": 0,
                    "urgent": True,
                    "customerid": None,
                    "timetosend": None,
                    "key": None,
                    "sms_id": 48213,
                    "status": 7,
                    "statustitle": "Delivered",
                    "error": None,
                    "attempts": 1,
                    "times": {
                        "queued": "2030-01-02T03:04:05.120000+00:00",
                        "delivered": "2030-01-02T03:04:09.810000+00:00",
                    },
                }
            ]
        },
    )

    id: str
    state: str
    final: bool
    sendto: str
    body: str
    device_id: int
    sim: int
    urgent: bool
    customerid: int | None = None
    timetosend: str | None = None
    key: str | None = None
    sms_id: int | None = None
    status: int | None = None
    statustitle: str | None = None
    error: str | None = None
    attempts: int = 0
    expires: str | None = Field(None, description="Its ttl's deadline (ISO 8601), if any.")
    times: dict[str, str] = Field(default_factory=dict)


class DeadRecord(Record):
    """A rejected message; ``gone`` when its record expired (then only ``id`` is known)."""

    model_config = ConfigDict(extra="allow")

    state: str = "rejected"
    final: bool = True
    sendto: str = ""
    body: str = ""
    device_id: int = 0
    sim: int = 0
    urgent: bool = False
    rejected_at: str
    gone: bool


class DeadDone(BaseModel):
    """What a dead-message action did."""

    id: str
    state: str = Field(description="queued after a retry, purged after a purge.")


class KeyIn(BaseModel):
    """A key to create."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "billing", "scope": "send"}]}
    )

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="Unique name of the key."
    )
    scope: str = Field("send", pattern="^(send|read|admin)$")


class ApiKeyOut(BaseModel):
    """An API key as stored (never the key itself)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "billing",
                    "scopes": ["send"],
                    "created_ms": 1893553445120,
                    "last_used_ms": None,
                }
            ]
        }
    )

    name: str
    scopes: list[str]
    created_ms: int
    last_used_ms: int | None


class NewApiKey(ApiKeyOut):
    """A key just made: ``key`` is shown this once."""

    key: str


class StreamEvent(BaseModel):
    """The ``data`` of one event on ``GET /v1/events`` (also the webhook body)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "event_id": "1893553445120-0",
                    "id": "0mhx3k2p4a7fq1",
                    "state": "delivered",
                    "prev": "sent",
                    "final": True,
                    "at": "2030-01-02T03:04:05.120+00:00",
                    "at_ms": 1893553445120,
                    "device_id": 260,
                    "sim": 0,
                    "customerid": None,
                    "sms_id": 48213,
                    "status": 7,
                    "statustitle": "Delivered",
                    "error": None,
                    "urgent": True,
                    "event": "message",
                    "lastseen": None,
                    "lastseen_ms": None,
                }
            ]
        }
    )

    event_id: str = Field(description="The stream entry id, as the SSE `id:`.")
    event: str = Field(
        "message",
        description="`message` (a message changed state), or `device.offline` / "
        "`device.online` (a device sync found a phone gone or back: `device_id`, `state` "
        "offline/online, `lastseen`; `id` is empty).",
    )
    id: str = Field(description="The message id (empty on device events).")
    state: str
    prev: str | None
    final: bool
    at: str
    at_ms: int
    device_id: int | None
    sim: int | None
    customerid: int | None
    sms_id: int | None
    status: int | None
    statustitle: str | None
    error: str | None
    urgent: bool
    lastseen: str | None = Field(None, description="Device events: when the phone last polled.")
    lastseen_ms: int | None = None


def sse_schema() -> dict[str, Any]:
    """One Server-Sent Event of ``/v1/events``: ``id`` and a JSON ``data`` (a
    :class:`StreamEvent`, or an error body on an ``event: error`` before the stream ends)."""
    content = {
        "anyOf": [
            {"$ref": "#/components/schemas/StreamEvent"},
            {"$ref": "#/components/schemas/ErrorBody"},
        ]
    }
    return {
        "type": "object",
        "required": ["data"],
        "properties": {
            "id": {"type": "string"},
            "event": {"type": "string"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": content,
            },
        },
    }


class Health(BaseModel):
    status: str


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str = Field(description="Stable code: unauthorized, forbidden, not_found, invalid ...")
    message: str
    field: str | None = Field(None, description="The field at fault, when one is.")
    state: str | None = Field(None, description="409: the message's current state.")
    errors: list[dict[str, Any]] | None = Field(
        None, description="422 of a batch: each bad item's index, field and message."
    )


class ErrorBody(BaseModel):
    """Every error answer."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "code": "invalid",
                        "message": "must be digits with an optional leading +",
                        "field": "sendto",
                    }
                }
            ]
        }
    )

    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for ``statuses``, all in the one error shape."""
    words = {
        401: "Missing, unknown or revoked API key.",
        403: "The key's scope does not allow this.",
        404: "No such message.",
        409: "The message's state does not allow this.",
        413: "The body is larger than RELAY_API_BODY_MAX (or the batch than RELAY_API_BATCH_MAX).",
        415: "The body is not application/json.",
        422: "Invalid input; nothing stored.",
        503: "Redis is not reachable. Retry after Retry-After seconds (with the same "
        "Idempotency-Key when the message says the outcome is unknown).",
    }
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": ErrorBody, "description": words[status]}
        if status == 503:
            entry["headers"] = {
                "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}
            }
        out[status] = entry
    return out
