"""The failover scenario's failure dump (:func:`tests.chaos.failover._describe`): what it
prints about a message that is not final is what a failed chaos run leaves to read, so it
must run on the current key API, on both Redis servers."""

from __future__ import annotations

import pytest

from relay import Relay
from tests.chaos.failover import _describe


def test_the_dump_of_a_queued_message_names_its_lane(
    relay: Relay, capsys: pytest.CaptureFixture[str]
) -> None:
    msg_id = relay.send("+4915112345678", "waiting", 260, sim=1, urgent=True)
    capsys.readouterr()  # the send's own log lines
    _describe(relay, msg_id)
    out = capsys.readouterr().out
    assert out.startswith(f"not final: {msg_id} ")
    assert "'device_id': '260'" in out
    assert "'lanes': ['u']" in out  # in the urgent lane of 260/1, not in the bulk one
    assert "'tickets': [b'" in out or "'tickets': ['" in out  # the urgent lane's ticket is set
    assert "None], 'inflight': []" in out  # the bulk lane's is not
