"""A worker's teardown does not hang on RQ's command-listening thread.

RQ listens for commands (``rq`` stop/kill) on a pubsub thread whose passes wait up to 60 s;
once that thread has read the UNSUBSCRIBE reply it waits a whole pass for a new
subscription, and redis-py 8's ``stop()`` joins it. So a burst worker's end, or a SIGTERM,
could hang for a minute (seen: ``relay worker --burst`` timing out in the CLI tests). The
test puts the thread in exactly that state and then tears the worker down; the bound only
tells a hang from a finish, it measures no speed.
"""

from __future__ import annotations

import threading
import time

from relay.context import Context
from relay.run.worker import make_worker
from tests.fixtures.workers import MakeSettings

HANG_BOUND_S = 15.0
"""Far above the fixed wait (1 s), far below RQ's (60 s)."""


def test_teardown_after_the_unsubscribe_reply_does_not_wait_a_minute(
    relay_settings: MakeSettings,
) -> None:
    ctx = Context.from_settings(relay_settings())
    worker = make_worker(ctx, install_signals=False)
    worker.subscribe()
    try:
        assert worker.pubsub is not None and worker.pubsub_thread is not None
        deadline = time.monotonic() + HANG_BOUND_S
        while not worker.pubsub.subscribed:  # the thread has read the SUBSCRIBE reply
            assert time.monotonic() < deadline, "never subscribed"
            time.sleep(0.01)
        worker.pubsub.unsubscribe()
        while worker.pubsub.subscribed:  # ... and now the UNSUBSCRIBE reply: it waits a pass
            assert time.monotonic() < deadline, "never unsubscribed"
            time.sleep(0.01)
        teardown = threading.Thread(target=worker.unsubscribe, daemon=True)
        teardown.start()
        teardown.join(HANG_BOUND_S)
        assert not teardown.is_alive(), "the worker's teardown hangs on RQ's pubsub thread"
        assert not worker.pubsub_thread.is_alive()
    finally:
        ctx.close()
