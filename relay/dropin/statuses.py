"""A relay message's state as the gateway's status code and words (``getsmsstatus``,
``getallsms``).

- While relay holds the message (``scheduled``, ``queued``, ``submitting``, ``unknown``) it
  is ``1`` / ``New``: saved, not yet sent, as at the gateway.
- Once submitted, the gateway's own code and words as the reconciler learned them
  (``submitted`` keeps 1, 2 or 3; ``sent`` is 6, ``delivered`` 7, ``failed`` 8-12, 100, 101).
- relay's own endings, which the gateway never reports, are :data:`RELAY_ENDING` (``9``,
  the gateway's generic "not sent") with relay's words: ``rejected`` (the gateway refused
  the submission), ``cancelled`` (withdrawn before it was sent) and ``expired`` (no final
  code came within ``RELAY_STATUS_TTL``, or never submitted within its ttl).

Why 9: it is final, a failure, an int the SDK's ``SmsStatus`` takes, and every client that
knows the codes treats 8-12, 100 and 101 as "not sent"; of those it is the only one that
claims no particular cause (8 blames the network, 10-12 the radio, 100/101 the app's
permissions). The words tell the cause.
"""

from __future__ import annotations

from relay.dispatch.expiry import ERROR as TTL_ERROR
from relay.states import (
    DELIVERED_CODE,
    FAILED_CODES,
    GATEWAY_DESCRIPTIONS,
    PENDING_CODES,
    SENT_CODE,
    State,
)
from relay.store import Message

NEW = 1
RELAY_ENDING = 9
#: The words of each code when relay has none from the gateway (``getsmsstatus`` style).
DESCRIPTIONS = GATEWAY_DESCRIPTIONS
_HELD = frozenset({State.SCHEDULED, State.QUEUED, State.SUBMITTING, State.UNKNOWN})
_ENDINGS = {
    State.REJECTED: "Not sent: rejected by the gateway",
    State.CANCELLED: "Not sent: cancelled in relay",
    State.EXPIRED: "Expired in relay: no final status in time",
}


def gateway_status(msg: Message) -> tuple[int, str]:
    """The gateway status code and its words for ``msg`` (see the module docstring)."""
    state = msg.state
    if state in _HELD:
        return NEW, DESCRIPTIONS[NEW]
    if state == State.EXPIRED and msg.error == TTL_ERROR:
        return RELAY_ENDING, f"Not sent: {TTL_ERROR}"
    if state in _ENDINGS:
        words = _ENDINGS[state]
        return RELAY_ENDING, f"{words}: {msg.error}" if msg.error else words
    if state == State.DELIVERED:
        code = DELIVERED_CODE
    elif state == State.SENT:
        code = SENT_CODE
    elif state == State.FAILED:
        code = msg.status if msg.status in FAILED_CODES else RELAY_ENDING
    else:  # submitted: the gateway holds it
        code = msg.status if msg.status in PENDING_CODES else NEW
    words = msg.statustitle if msg.status == code and msg.statustitle else DESCRIPTIONS[code]
    return code, words
