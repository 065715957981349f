"""Every Redis key and RQ queue name relay uses, from one place.

All start with the configured prefix (``RELAY_KEY_PREFIX``, default ``relay``), so several
relays and test runs share one Redis without touching each other. A lane is named by a
:class:`relay.lanes.LaneId` (``u:260:0``), a device/SIM by a :class:`relay.lanes.DeviceSim`
(``260:0``), a device by its id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from relay.lanes import URGENT, DeviceSim, LaneId, LaneKind, PoolLane


@dataclass(frozen=True)
class Keys:
    prefix: str = "relay"

    # --- messages
    def msg(self, msg_id: str) -> str:
        """Hash: one message record (fields: see relay.store)."""
        return f"{self.prefix}:m:{msg_id}"

    def idem(self, key: str) -> str:
        """String: the message id first sent with idempotency ``key`` (expires)."""
        return f"{self.prefix}:idem:{key}"

    @property
    def counts(self) -> str:
        """Hash: state → number of messages in it (final states: every message that ended there)."""
        return f"{self.prefix}:counts"

    @property
    def events(self) -> str:
        """Stream: one entry per state change, read by other services with consumer groups."""
        return f"{self.prefix}:events"

    # --- lanes and scheduling
    def lane(self, lane: LaneId) -> str:
        """List of message ids waiting in ``lane``; head is sent first."""
        return f"{self.prefix}:lane:{lane.member}"

    def pool_lane(self, lane: PoolLane) -> str:
        """List of pooled message ids waiting in a pool's lane (``pu:otp``); head first."""
        return f"{self.prefix}:lane:{lane.member}"

    def sched(self, lane: LaneId) -> str:
        """Sorted set: id → due time (ms) of future messages of ``lane``."""
        return f"{self.prefix}:sched:{lane.member}"

    @property
    def sched_due(self) -> str:
        """Sorted set: lane member (``kind:dev:sim``) → earliest due time (ms) in its schedule."""
        return f"{self.prefix}:sched-due"

    @property
    def deadlines(self) -> str:
        """Sorted set: id → ttl deadline (ms) of queued or scheduled messages that have one."""
        return f"{self.prefix}:deadlines"

    @property
    def lanes(self) -> str:
        """Set: every device/SIM member (``dev:sim``) that ever held a message."""
        return f"{self.prefix}:lanes"

    # --- pacing and dispatch
    def pace(self, pair: DeviceSim) -> str:
        """Hash: pacing of ``pair``: ``tat`` (GCRA, ms), ``cap`` (batch size while bisecting
        a refusal), ``fails`` (consecutive failed requests, for the backoff)."""
        return f"{self.prefix}:pace:{pair.member}"

    def ticket(self, lane: LaneId) -> str:
        """String: set while ``lane``'s dispatch ticket is queued, running or waiting on a
        timer; its value is the RQ job id (or ``timer``)."""
        return f"{self.prefix}:ticket:{lane.member}"

    def progress(self, lane: LaneId) -> str:
        """String, short-lived: the job id of the ticket run that last claimed on ``lane``,
        set by every claim (``lua/claim.lua``) to expire after one run's bound; while it is
        missing and the lane's oldest message waits long, the sweep judges the lane stalled."""
        return f"{self.prefix}:progress:{lane.member}"

    @property
    def timers(self) -> str:
        """Sorted set: lane member → time (ms) its ticket may run again."""
        return f"{self.prefix}:timers"

    def quota(self, pair: DeviceSim, window: str, number: int) -> str:
        """String: messages ``pair`` took in quota window ``number`` of kind ``window``
        (``h``: epoch ms // 3600000, ``d``: // 86400000); INCRBY in ``lua/claim.lua``,
        expires after its window."""
        return f"{self.prefix}:quota:{pair.member}:{window}{number}"

    @property
    def devices(self) -> str:
        """Hash: device id → JSON of the device as last seen in getalldevices."""
        return f"{self.prefix}:devices"

    @property
    def offline(self) -> str:
        """Set: ids (decimal) of the devices the last sync found offline (``relay.presence``);
        read by ``lua/claim.lua``: an offline device takes no pooled messages, and holds its
        own while ``RELAY_HOLD_OFFLINE``."""
        return f"{self.prefix}:offline"

    @property
    def devices_synced(self) -> str:
        """String: time (ms) of the last getalldevices sync."""
        return f"{self.prefix}:devices-synced"

    # --- batches
    def batch(self, batch_id: str) -> str:
        """Hash: a claimed batch (see :class:`relay.dispatch.batch.Batch`)."""
        return f"{self.prefix}:batch:{batch_id}"

    @property
    def inflight(self) -> str:
        """Sorted set: batch id → claim time (ms) of batches being submitted."""
        return f"{self.prefix}:inflight"

    @property
    def verify(self) -> str:
        """Sorted set: batch id → time (ms) its outcome-unknown check may run."""
        return f"{self.prefix}:verify"

    @property
    def dead(self) -> str:
        """Sorted set: id → time (ms) of messages that ended rejected (``relay dead``)."""
        return f"{self.prefix}:dead"

    # --- reconciling
    def pending(self, dev: int) -> str:
        """Sorted set: id → submission time (ms) of submitted messages of ``dev`` not yet final."""
        return f"{self.prefix}:pending:{dev}"

    @property
    def pending_devices(self) -> str:
        """Set: devices with a non-empty pending set."""
        return f"{self.prefix}:pending-devices"

    def sms_index(self, dev: int) -> str:
        """Hash: gateway sms_id → relay message id, for records already matched on ``dev``."""
        return f"{self.prefix}:sms:{dev}"

    def lease(self, name: str) -> str:
        """String: a lease held by one process (value: its name), with a TTL."""
        return f"{self.prefix}:lease:{name}"

    @property
    def urgent_waiting(self) -> str:
        """Sorted set: urgent message ids submitted and not yet sent → submission time (ms)."""
        return f"{self.prefix}:urgent-waiting"

    # --- API keys (relay serve)
    @property
    def apikeys(self) -> str:
        """Hash: API key name → SHA-256 hex digest of the key (the index of ``apikey``)."""
        return f"{self.prefix}:apikeys"

    def apikey(self, digest: str) -> str:
        """Hash: one API key by the SHA-256 hex digest of its plaintext (``name``,
        ``scope``, ``created`` ms, ``used`` ms); the plaintext itself is never stored."""
        return f"{self.prefix}:apikey:{digest}"

    # --- processes
    @property
    def processes(self) -> str:
        """Hash: process name → JSON heartbeat (kind, host, pid, seen)."""
        return f"{self.prefix}:processes"

    # --- the SMSGateway24-compatible front (/getdata/): integer message ids
    @property
    def dropin_seq(self) -> str:
        """String: the last integer id issued by the drop-in front (INCRBY; never reused)."""
        return f"{self.prefix}:dropin:seq"

    @property
    def dropin_ids(self) -> str:
        """Hash: drop-in integer id → relay message id."""
        return f"{self.prefix}:dropin:ids"

    def dropin_index(self, dev: int) -> str:
        """Sorted set: ``<integer id>:<relay id>`` → creation time (ms) of the drop-in
        messages of device ``dev`` (what drop-in ``getallsms`` reads)."""
        return f"{self.prefix}:dropin:dev:{dev}"

    @property
    def dropin_devices(self) -> str:
        """Set: devices that have a drop-in index."""
        return f"{self.prefix}:dropin:devices"

    # --- the dashboard: rolling history (minute = epoch ms // 60000) and sessions
    def history(self, minute: int) -> str:
        """Hash: state → changes into it during ``minute`` (``lua/transition.lua``); 25 h TTL."""
        return f"{self.prefix}:hist:{minute}"

    def latency(self, minute: int) -> str:
        """List: urgent latencies (ms, queued → stored at the gateway) of the messages stored
        during ``minute``, the newest few thousand (``lua/latency.lua``); expires."""
        return f"{self.prefix}:lat:{minute}"

    def session(self, digest: str) -> str:
        """Hash: a dashboard session by the SHA-256 hex digest of its id (``key``: the API
        key's digest, ``csrf``, ``name``, ``created`` ms); expires."""
        return f"{self.prefix}:session:{digest}"

    # --- RQ queues (names, not keys: RQ adds its own ``rq:queue:`` prefix)
    @property
    def urgent_queue(self) -> str:
        return f"{self.prefix}-urgent"

    @property
    def bulk_queue(self) -> str:
        return f"{self.prefix}-bulk"

    @property
    def webhook_queue(self) -> str:
        return f"{self.prefix}-webhooks"

    def queue_for(self, kind: LaneKind) -> str:
        return self.urgent_queue if kind == URGENT else self.bulk_queue

    @property
    def job_tag(self) -> str:
        """The prefix as RQ job ids may spell it (letters, digits, ``_`` and ``-``)."""
        return re.sub(r"[^A-Za-z0-9_-]", "_", self.prefix)

    def job_id(self, what: str, token: str) -> str:
        """An RQ job id of this relay: ``<job_tag>-<what>-<token>`` (so RQ's ``rq:job:``
        hashes of one relay are found, and cleaned up, by its prefix)."""
        return f"{self.job_tag}-{what}-{token}"
