"""``relay.webhook.deliver``: the import path of the webhook RQ job function.

Webhook jobs already queued in a user's Redis name this path; the code lives in
:mod:`relay.results.webhook`.
"""

from relay.results.webhook import deliver

__all__ = ["deliver"]
