"""Storing drop-in send requests through relay's producer, and issuing their integer ids.

One request is at most :data:`relay.dropin.messages.MAX_MESSAGES` messages: relay's
validation (``validate``, as ``send_many``) checks every message first, then one call of
relay's enqueue script (``Producer.enqueue``, one chunk) stores all of them, so a refused
request stores nothing. The integer ids are issued right after (``lua/dropin_ids.lua``); a
request's messages get consecutive ones, and the answer names the first.
"""

from __future__ import annotations

import random
from zoneinfo import ZoneInfo

import redis

from relay.core import Relay
from relay.dropin import messages
from relay.dropin.answers import Answer, saved
from relay.dropin.ids import DropinIds
from relay.dropin.messages import Batch
from relay.dropin.params import Params
from relay.errors import DropinRefused, ValidationError
from relay.log import get_logger
from relay.produce.validation import validate

log = get_logger(__name__)

#: A request of n messages prunes each device it touched with probability n / PRUNE_EVERY
#: (at most 1), checking up to PRUNE_BUDGET old entries: far more than it adds, on average.
PRUNE_EVERY = 32
PRUNE_BUDGET = 1000


class StoredWithoutIds(DropinRefused):
    """The messages were stored (and will be sent) but their integer ids could not be
    written: Redis stopped answering between the two steps. The client must not resend."""


class Sender:
    """``addsms`` / ``smstosend`` / ``addalotofsms`` on one :class:`Relay`."""

    def __init__(self, relay: Relay, ids: DropinIds, tz: ZoneInfo) -> None:
        self.relay = relay
        self.ids = ids
        self.tz = tz

    def addsms(self, params: Params) -> Answer:
        """Store one message (one per recipient of a comma list); answer the first id."""
        upload = params.files.get("file")
        if upload is not None or params.text("file"):
            raise DropinRefused(
                "Field 'file': relay does not carry images yet; send the image through the "
                "gateway directly, or send text (nothing was stored)"
            )
        return saved(self.store(messages.single(params, self.tz)))

    def addalotofsms(self, batch: Batch) -> Answer:
        """Store every message of an ``addalotofsms`` request (:func:`messages.bulk`), all
        or none; the gateway's answer names no ids."""
        self.store(batch)
        return saved()

    def store(self, batch: Batch) -> int:
        """Validate and store ``batch`` in one enqueue call; issue its integer ids; the first."""
        now = self.relay.ctx.clock.now()
        settings = self.relay.settings
        try:
            msgs = [validate(item, settings, now, index=i) for i, item in enumerate(batch.items)]
        except ValidationError as exc:
            raise batch.refusal(exc) from None
        # one enqueue.lua call for the whole request: stored all at once, or not at all
        msg_ids = [done.id for done in self.relay.producer.enqueue(msgs, chunk_size=len(msgs))]
        devices = [msg.device_id for msg in msgs]
        try:
            first = self.ids.assign(msg_ids, devices)
        except redis.RedisError as exc:
            log.error("dropin.ids_not_written", messages=len(msg_ids), error=str(exc))
            raise StoredWithoutIds(
                f"{len(msg_ids)} message(s) were stored and will be sent, but relay could not "
                "record their ids (its storage stopped answering): do not send them again"
            ) from None
        log.debug("dropin.stored", messages=len(msg_ids), first=first)
        self._maybe_prune(set(devices), len(msg_ids))
        return first

    def _maybe_prune(self, devices: set[int], added: int) -> None:
        if random.random() >= added / PRUNE_EVERY:
            return
        for dev in devices:
            try:
                removed = self.ids.prune(dev, PRUNE_BUDGET)
            except redis.RedisError as exc:
                log.warning("dropin.prune_failed", device=dev, error=str(exc))
                return
            if removed:
                log.info("dropin.pruned", device=dev, removed=removed)
