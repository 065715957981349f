"""The SMSGateway24 API client: :class:`GatewayClient` and the models of its answers.

See ``relay/gateway/client.py`` for the failure policy (what is retried, when a submission
is :class:`~relay.errors.NotSent` and when its outcome is unknown).
"""

from relay.gateway.client import GatewayClient
from relay.gateway.models import (
    Device,
    DeviceStatus,
    OutgoingSms,
    SimInfo,
    SmsList,
    SmsRecord,
    SmsStatus,
)

__all__ = [
    "Device",
    "DeviceStatus",
    "GatewayClient",
    "OutgoingSms",
    "SimInfo",
    "SmsList",
    "SmsRecord",
    "SmsStatus",
]
