"""``savetag``, ``savecontact`` and ``savepaket``: passed to the gateway with relay's own
credentials (``RELAY_GATEWAY_*``), which a drop-in client never sees; the gateway's answer
comes back in its own shape, its refusals in its own words.

These calls store something at the gateway and are sent once, never retried (relay's
gateway client policy): a timeout is answered as such, and the client decides.
"""

from __future__ import annotations

from collections.abc import Callable

from relay.context import Context
from relay.dropin.answers import Answer
from relay.dropin.params import Params
from relay.errors import (
    ConfigError,
    DropinRefused,
    GatewayAuthError,
    GatewayError,
    GatewayRejected,
    NotSent,
    OutcomeUnknown,
)
from relay.log import get_logger

log = get_logger(__name__)


class Passthrough:
    """The gateway calls a drop-in client may make through relay."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def savetag(self, params: Params) -> Answer:
        title = _required(params, "title")
        tag_id = self._call("savetag", lambda: self.ctx.gateway.save_tag(title))
        return {"error": 0, "message": "Ok", "tag_id": tag_id}

    def savecontact(self, params: Params) -> Answer:
        phone = _required(params, "phone")
        name = "ctag_id" if params.text("ctag_id") and not params.text("tag_id") else "tag_id"
        tag_id = params.integer(name, required=True)
        assert tag_id is not None
        fullname = params.text("fullname") or None
        contact_id = self._call(
            "savecontact", lambda: self.ctx.gateway.save_contact(phone, tag_id, fullname)
        )
        return {"error": 0, "contact_id": contact_id, "message": "ok"}

    def savepaket(self, params: Params) -> Answer:
        title, body, tags = (_required(params, n) for n in ("title", "body", "tags"))
        device_id = params.integer("device_id", required=True)
        assert device_id is not None
        sim = params.integer("sim") or 0
        when = params.text("time_to_send") or "0"
        paket_id = self._call(
            "savepaket",
            lambda: self.ctx.gateway.save_paket(title, device_id, body, tags, sim, when),
        )
        # "paket" beside "paket_id": the gateway's npm package reads that name
        return {"error": 0, "message": "Ok", "paket_id": paket_id, "paket": paket_id}

    def _call(self, endpoint: str, call: Callable[[], int]) -> int:
        """Run one gateway call; its failures become refusals in words a client can act on."""
        try:
            return call()
        except GatewayRejected as exc:
            raise DropinRefused(exc.gateway_message) from None
        except GatewayAuthError:
            log.error("dropin.gateway_auth_refused", endpoint=endpoint)
            raise DropinRefused(
                "relay's own gateway login was refused; ask relay's operator"
            ) from None
        except NotSent:
            raise DropinRefused("the gateway could not be reached; nothing was stored") from None
        except OutcomeUnknown:
            raise DropinRefused(
                "the gateway did not answer in time; it may or may not have stored this"
            ) from None
        except ConfigError:
            log.error("dropin.gateway_not_configured", endpoint=endpoint)
            raise DropinRefused("relay has no gateway credentials configured") from None
        except GatewayError as exc:
            log.warning("dropin.gateway_failed", endpoint=endpoint, error=str(exc))
            raise DropinRefused("the gateway is unavailable; try again later") from None


def _required(params: Params, name: str) -> str:
    value = params.text(name)
    if not value:
        raise DropinRefused(f"Field '{name}' is required")
    return value
