"""relay: SMS, WhatsApp and RCS through your own Android phones via the SMSGateway24 API.

``from relay import Relay``; see :class:`relay.core.Relay`.
"""

from importlib.metadata import PackageNotFoundError, version

from relay.core import Relay
from relay.errors import (
    ConfigError,
    ConflictError,
    GatewayAuthError,
    GatewayBadResponse,
    GatewayError,
    GatewayRejected,
    GatewayServerError,
    GatewayUnavailable,
    NotFoundError,
    NotSent,
    OutcomeUnknown,
    RelayError,
    ValidationError,
)
from relay.states import State
from relay.store import Message

try:
    __version__ = version("relay-sms")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "ConfigError",
    "ConflictError",
    "GatewayAuthError",
    "GatewayBadResponse",
    "GatewayError",
    "GatewayRejected",
    "GatewayServerError",
    "GatewayUnavailable",
    "Message",
    "NotFoundError",
    "NotSent",
    "OutcomeUnknown",
    "Relay",
    "RelayError",
    "State",
    "ValidationError",
    "__version__",
]
