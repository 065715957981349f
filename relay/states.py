"""Message states, the moves between them, and how gateway status codes map onto them.

``scheduled`` → ``queued`` → ``submitting`` → (``unknown`` →) ``submitted`` → ``sent`` →
``delivered``, or a final ``failed``, ``rejected``, ``cancelled``, ``expired``.
``sent`` is final only once no delivery report came within ``RELAY_DELIVERY_REPORT_WAIT``
(the record's ``final`` flag says so).

:data:`ALLOWED_FROM` is the whole state machine: every change of state goes through
:meth:`relay.store.Store.transition`, which refuses a move this table does not allow.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    SUBMITTING = "submitting"
    UNKNOWN = "unknown"
    SUBMITTED = "submitted"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


#: States a message never leaves.
FINAL_STATES = frozenset(
    {State.DELIVERED, State.FAILED, State.REJECTED, State.CANCELLED, State.EXPIRED}
)
#: States that may end a message (``sent`` once its report wait is over).
ENDING_STATES = FINAL_STATES | {State.SENT}
#: States of a message that waits in relay, not yet handed to the gateway.
WAITING_STATES = frozenset({State.SCHEDULED, State.QUEUED})
#: States of a message handed (or maybe handed) to the gateway, not yet final.
AT_GATEWAY_STATES = frozenset({State.SUBMITTING, State.UNKNOWN, State.SUBMITTED, State.SENT})

#: State → the states a message may move to it from (a message is created ``queued`` or
#: ``scheduled``; nothing moves back to ``scheduled``).
ALLOWED_FROM: dict[State, frozenset[State]] = {
    State.SCHEDULED: frozenset(),
    # promoted when due; claimed but never sent; put back after a refusal, a failed
    # request or a verification that found nothing; a dead letter retried
    State.QUEUED: WAITING_STATES | {State.SUBMITTING, State.UNKNOWN, State.REJECTED},
    State.SUBMITTING: WAITING_STATES,
    State.UNKNOWN: frozenset({State.SUBMITTING}),
    State.SUBMITTED: frozenset({State.SUBMITTING, State.UNKNOWN}),
    # sent -> sent is the move that makes "sent" final once no report came
    State.SENT: frozenset({State.SUBMITTED, State.SENT}),
    State.DELIVERED: frozenset({State.SUBMITTED, State.SENT}),
    State.FAILED: frozenset({State.SUBMITTED, State.SENT}),
    State.REJECTED: frozenset({State.SUBMITTING, State.UNKNOWN}),
    State.CANCELLED: WAITING_STATES,
    # no final code within the status TTL; or not submitted within its own ttl (a message
    # that reached the gateway never expires that way)
    State.EXPIRED: WAITING_STATES | {State.SUBMITTED},
}

#: Gateway status codes (docs/gateway-api.md) that end a message as ``failed``.
FAILED_CODES = frozenset({8, 9, 10, 11, 12, 100, 101})
DELIVERED_CODE = 7
SENT_CODE = 6
#: Codes of a message the gateway holds but has not sent yet.
PENDING_CODES = frozenset({1, 2, 3})

#: The gateway's words for each code (``status_description`` in ``getsmsstatus`` answers).
GATEWAY_DESCRIPTIONS = {
    1: "New",
    2: "Taken from server",
    3: "Queued for sending",
    5: "Incoming",
    6: "Sent",
    7: "Delivered",
    8: "Not delivered",
    9: "Not sent: generic failure",
    10: "Not sent: no service",
    11: "Not sent: null PDU",
    12: "Not sent: radio off",
    100: "Not sent: not allowed",
    101: "Not sent: not allowed at all",
}
#: relay's words for a code the gateway gave without any.
STATUS_TITLES = {
    **GATEWAY_DESCRIPTIONS,
    2: "Taken from server by the phone",
    6: "Sent by phone",
}


def state_for_code(code: int) -> State | None:
    """The relay state a gateway status code moves a submitted message to (None: no change)."""
    if code == DELIVERED_CODE:
        return State.DELIVERED
    if code in FAILED_CODES:
        return State.FAILED
    if code == SENT_CODE:
        return State.SENT
    return None
