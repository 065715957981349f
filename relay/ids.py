"""Message ids: short, time-ordered, made in Python.

An id is the creation time in milliseconds, base36, padded to 9 characters (sorts
correctly until the year 5188), followed by 5 base36 characters that start at a random
value and count up within one call (a ``random.Random`` of relay's own: ids need to be
distinct, not secret; it is reseeded in every forked process, and an application that seeds
the global ``random``, as test suites and hypothesis do, cannot make ids repeat). So ids of
one ``send_many`` chunk are distinct and ordered, ids of different moments sort by time,
and ids look like ``0mhx3k2p4a7fq1``.

Uniqueness does not rest on the random part alone: ``lua/enqueue.lua`` refuses an id whose
record already exists, and the producer then makes new ones.
"""

from __future__ import annotations

import os
import random

ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
TIME_WIDTH = 9
SUFFIX_WIDTH = 5
SUFFIX_SPACE = 36**SUFFIX_WIDTH
ID_LENGTH = TIME_WIDTH + SUFFIX_WIDTH
#: The random start of a lone id: 25 bits, well inside the suffix space.
_LONE_BITS = 25

_rng = random.Random()
os.register_at_fork(after_in_child=_rng.seed)

# (ms, its base36) of the last id made: sends within one millisecond reuse the prefix.
_last: tuple[int, str] = (-1, "")


def base36(value: int, width: int) -> str:
    """``value`` (>= 0) in base36, left-padded with zeros to ``width`` characters."""
    if value < 0:
        raise ValueError("base36 takes a non-negative number")
    digits = []
    while value:
        value, rem = divmod(value, 36)
        digits.append(ALPHABET[rem])
    return "".join(reversed(digits)).rjust(width, "0")


def _prefix(now_ms: int) -> str:
    global _last
    last = _last
    if last[0] != now_ms:
        last = _last = (now_ms, base36(now_ms, TIME_WIDTH))
    return last[1]


def new_id(now_ms: int) -> str:
    """One fresh id for a message created at ``now_ms``."""
    return _prefix(now_ms) + base36(_rng.getrandbits(_LONE_BITS), SUFFIX_WIDTH)


def new_ids(now_ms: int, count: int) -> list[str]:
    """``count`` distinct ids for messages created at ``now_ms``, in ascending order."""
    if count > SUFFIX_SPACE // 2:
        raise ValueError(f"at most {SUFFIX_SPACE // 2} ids per call")
    prefix = _prefix(now_ms)
    start = _rng.randrange(SUFFIX_SPACE - count + 1)
    return [prefix + base36(start + i, SUFFIX_WIDTH) for i in range(count)]


def id_time_ms(msg_id: str) -> int:
    """The creation time (ms) encoded in ``msg_id``."""
    return int(msg_id[:TIME_WIDTH], 36)
