"""Dispatch: the RQ jobs that drain each device/SIM's lanes into ``addalotofsms`` calls.

- :mod:`relay.dispatch.tickets`: the ticket of a lane (its key, its RQ job, timers);
- :mod:`relay.dispatch.ticket`: one run of a ticket: claim, submit, record, re-arm;
- :mod:`relay.dispatch.submit`: one claimed batch and its outcome;
- :mod:`relay.dispatch.recovery`: batches whose outcome is unknown, verified before any resend.

``relay.dispatch.run_ticket`` is the import path of the job function in every ticket already
queued in a user's Redis; it stays here whatever moves inside the package.
"""

from relay.dispatch.ticket import run_ticket

__all__ = ["run_ticket"]
