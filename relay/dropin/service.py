"""The drop-in front's requests, endpoint by endpoint: who may call, what runs, what comes
back. Framework-free: the HTTP layer (``relay.api.dropin``) reads the request into
:class:`Params` and sends the answer; nothing here raises to it.

Tokens are relay API keys (``relay apikey create``): ``token`` in every call,
``pass`` in ``smstosend`` and ``gettoken`` (whose ``email`` is ignored). Sending endpoints
(``addsms``, ``smstosend``, ``addalotofsms``, ``savetag``, ``savecontact``, ``savepaket``)
need a key that may send (scope ``send`` or ``admin``); reading ones (``getsmsstatus``,
``getallsms``, ``getalldevices``, ``getdevicestatus``) take any key that may read or send,
since one gateway token does both and the SDK uses one for everything. A missing token
answers ``Token is required`` and a wrong or revoked one ``Wrong token``, as the gateway does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis

from relay.core import Relay
from relay.dropin import messages
from relay.dropin.answers import Answer, refused
from relay.dropin.dates import zone
from relay.dropin.ids import DropinIds
from relay.dropin.params import Params
from relay.dropin.passthrough import Passthrough
from relay.dropin.reading import Reader
from relay.dropin.sending import Sender
from relay.errors import DropinRefused, ValidationError
from relay.log import get_logger

log = get_logger(__name__)

SEND = "send"
READ = "read"
#: The permissions that open a route of each kind: one gateway token does everything, so
#: a ``send`` key may also follow its messages and devices (the PHP SDK sends and reads
#: with one token); a ``read`` key may only read.
SCOPES_FOR = {SEND: (SEND,), READ: (READ, SEND)}
WRONG_TOKEN = "Wrong token"
NO_TOKEN = "Token is required"
BAD_LOGIN = "Login or password incorrect"
UNAVAILABLE = "relay is unavailable right now (its storage does not answer); try again later"
MAYBE_STORED = (
    "relay's storage did not answer in time: this request may or may not have been stored "
    "(getallsms tells); try again later"
)
#: Endpoints that store messages in relay.
STORING = frozenset({"addsms", "smstosend", "addalotofsms"})
INTERNAL = "relay could not handle this request (an internal error, logged); try again later"


class Key(Protocol):
    """What the drop-in needs of an API key (``relay.apikeys.ApiKey``)."""

    @property
    def name(self) -> str: ...

    def allows(self, permission: str) -> bool: ...


Authenticate = Callable[[str], Key | None]
"""Plaintext key → the key, or None for a wrong or revoked one (``ApiKeys.authenticate``)."""


@dataclass(frozen=True)
class Outcome:
    """A request's answer, the name of the key that made it (None: not authenticated), and
    whether Redis failed to answer (the HTTP layer then holds off Redis for a while)."""

    answer: Answer
    key_name: str | None = None
    redis_down: bool = False


class Dropin:
    """Answers ``/getdata/<endpoint>`` requests against one :class:`Relay`."""

    def __init__(self, relay: Relay, authenticate: Authenticate) -> None:
        self.relay = relay
        self.authenticate = authenticate
        ctx = relay.ctx
        tz = zone(ctx.settings.dropin_timezone)
        ids = DropinIds(ctx)
        self.sender = Sender(relay, ids, tz)
        self.reader = Reader(ctx, ids, tz)
        self.passthrough = Passthrough(ctx)
        self._token_routes: dict[str, tuple[str, Callable[[Params], Answer]]] = {
            "addsms": (SEND, self.sender.addsms),
            "getsmsstatus": (READ, self.reader.getsmsstatus),
            "getallsms": (READ, self.reader.getallsms),
            "getalldevices": (READ, self.reader.getalldevices),
            "getdevicestatus": (READ, self.reader.getdevicestatus),
            "savetag": (SEND, self.passthrough.savetag),
            "savecontact": (SEND, self.passthrough.savecontact),
            "savepaket": (SEND, self.passthrough.savepaket),
        }

    @property
    def endpoints(self) -> frozenset[str]:
        return frozenset({*self._token_routes, "smstosend", "addalotofsms", "gettoken"})

    def handle(self, endpoint: str, params: Params) -> Outcome:
        """The answer to one request; every failure becomes ``{"error":1,"message":...}``."""
        holder: list[Key] = []
        endpoint = endpoint.strip("/").lower()
        down = False
        try:
            answer = self._route(endpoint, params, holder)
        except DropinRefused as exc:
            answer = refused(str(exc))
        except ValidationError as exc:
            answer = refused(f"Field '{exc.field}' {exc.reason}")
        except redis.RedisError as exc:
            log.error("dropin.redis_unavailable", endpoint=endpoint, error=type(exc).__name__)
            down = isinstance(exc, redis.ConnectionError | redis.TimeoutError)
            answer = refused(MAYBE_STORED if endpoint in STORING else UNAVAILABLE)
        except Exception:
            log.exception("dropin.internal_error", endpoint=endpoint)
            answer = refused(INTERNAL)
        return Outcome(answer, holder[0].name if holder else None, down)

    def _route(self, endpoint: str, params: Params, holder: list[Key]) -> Answer:
        if endpoint in self._token_routes:
            scope, run = self._token_routes[endpoint]
            holder.append(self._key(params.text("token"), scope))
            return run(params)
        if endpoint == "smstosend":
            holder.append(self._key(params.text("pass"), SEND, login=True))
            return self.sender.addsms(params)
        if endpoint == "addalotofsms":
            token, batch = messages.bulk(params, self.sender.tz)
            holder.append(self._key(token, SEND))
            return self.sender.addalotofsms(batch)
        if endpoint == "gettoken":
            return self._gettoken(params, holder)
        raise DropinRefused(f"Unknown method {endpoint!r}")

    def _key(self, plaintext: str, scope: str, *, login: bool = False) -> Key:
        """The key ``plaintext`` names, if it may use ``scope``."""
        if not plaintext:
            raise DropinRefused("Field 'pass' is required" if login else NO_TOKEN)
        key = self.authenticate(plaintext)
        if key is None:
            raise DropinRefused(BAD_LOGIN if login else WRONG_TOKEN)
        if not any(key.allows(p) for p in SCOPES_FOR[scope]):
            raise DropinRefused(
                f"Token not allowed here: relay API key {key.name!r} may not {scope}"
            )
        return key

    def _gettoken(self, params: Params, holder: list[Key]) -> Answer:
        """``email`` + ``pass``: a relay API key given as ``pass`` is the token to use."""
        plaintext = params.text("pass")
        key = self.authenticate(plaintext) if plaintext else None
        if key is None:
            raise DropinRefused(BAD_LOGIN)
        holder.append(key)
        return {"error": 0, "message": "OK", "token": plaintext}
