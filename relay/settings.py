"""Settings: environment variables and a ``.env`` file, prefix ``RELAY_``.

Every public knob of relay lives here, so the configuration table in the README and
``.env.example`` can be checked against one class. A bad value fails at start-up with
:class:`relay.errors.ConfigError` naming the variable.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from relay.errors import ConfigError
from relay.sentinel import is_sentinel_url, parse_sentinel_url

ENV_PREFIX = "RELAY_"


class Settings(BaseSettings):
    """relay's configuration. Field ``name`` is read from ``RELAY_NAME``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    # --- connections
    redis_url: str = Field(
        "redis://localhost:6379/0",
        description="Redis server URL (redis://, rediss://, unix://), or Sentinels: "
        "redis+sentinel://[:password@]h1:26379,h2:26379/<master>/<db>.",
    )
    redis_sentinel_password: SecretStr | None = Field(
        None, description="Password of the Sentinels themselves (the data nodes' is in the URL)."
    )
    redis_min_replicas: int = Field(
        0,
        ge=0,
        description="Replicas a send, and a batch's claim, must reach (WAIT) before relay "
        "answers or calls the gateway; 0: no wait.",
    )
    redis_wait_timeout: float = Field(
        1.0,
        gt=0,
        description="Seconds to wait for RELAY_REDIS_MIN_REPLICAS before a send fails and a "
        "batch waits.",
    )
    redis_socket_timeout: float = Field(
        30.0,
        ge=15,
        description="Seconds a Redis reply may take before the call fails (a lost reply "
        "never hangs a thread); above every blocking call relay makes (RQ's dequeue waits "
        "10 s less, RELAY_REDIS_WAIT_TIMEOUT must be shorter).",
    )
    redis_reconnect_timeout: float = Field(
        30.0,
        ge=0,
        description="Seconds a Redis call waits for a server to connect to (a restart, a "
        "failover) before it fails.",
    )
    key_prefix: str = Field(
        "relay", min_length=1, description="Prefix of every Redis key and RQ queue name."
    )

    # --- gateway
    gateway_url: str = Field(
        "https://smsgateway24.com/getdata/", description="Base URL of the gateway API."
    )
    gateway_token: SecretStr | None = Field(
        None, description="API token; or give email and password."
    )
    gateway_email: str | None = Field(None, description="Account email, used to obtain a token.")
    gateway_password: SecretStr | None = Field(
        None, description="Account password, used to obtain a token."
    )
    gateway_timeout: float = Field(
        30.0, gt=0, description="Seconds before a gateway request times out."
    )
    gateway_retries: int = Field(4, ge=0, le=20, description="Retries of read-only gateway calls.")

    # --- messages
    default_region: str | None = Field(
        None, description="ISO region (e.g. DE) to turn national numbers into E.164."
    )
    body_max: int = Field(4096, gt=0, description="Longest accepted message body, in characters.")
    idempotency_ttl: int = Field(86400, gt=0, description="Seconds a send `key` is remembered.")
    default_ttl: float | None = Field(
        None, gt=0, description="Seconds a message without its own ttl may wait to be submitted."
    )

    # --- dispatch
    batch_max: int = Field(
        500, gt=0, le=10000, description="Most messages in one addalotofsms call."
    )
    default_send_interval: float = Field(
        5.0, ge=0, description="Seconds between SMS of a device whose delaybetweeneachsms is null."
    )
    default_poll_interval: float = Field(
        10.0, ge=0, description="Seconds between polls of a device the gateway does not describe."
    )
    device_overrides: dict[str, float] = Field(
        default_factory=dict,
        description='Per-device send interval overrides, JSON: {"260": 2.5, "260:1": 4}.',
    )
    pools: dict[str, list[str]] = Field(
        default_factory=dict,
        description='Device pools, JSON: {"otp": ["260:0", "261:0"]}; send with pool=NAME.',
    )
    device_limits: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description='Per-SIM quotas, JSON: {"260:0": {"per_hour": 100, "per_day": 500, '
        '"urgent_over": false}}.',
    )
    hold_offline: bool = Field(
        True,
        description="Hold messages addressed to an offline device in relay (false: submit "
        "them anyway).",
    )
    device_refresh: float = Field(
        30.0, gt=0, description="Seconds between getalldevices refreshes (offline detection)."
    )
    device_offline_after: float = Field(
        120.0,
        gt=0,
        description="Seconds since a device's lastseen after which it is offline "
        "(never under 3 of its polls).",
    )
    inflight_timeout: float = Field(
        120.0,
        gt=0,
        description="Seconds after which an in-flight batch of a silent worker is verified.",
    )
    verify_grace: float = Field(
        2.0,
        ge=0,
        description="Poll periods to wait before a batch not found at the gateway is resent.",
    )
    verify_min_grace: float = Field(
        3.0,
        ge=0,
        description="Fewest seconds to wait before a batch not found at the gateway is resent.",
    )
    max_attempts: int = Field(
        5, ge=1, description="Submissions of a message before it ends rejected."
    )

    # --- reconciler
    reconcile_interval: float = Field(
        10.0, gt=0, description="Seconds between reconciler passes when idle."
    )
    reconcile_urgent_interval: float = Field(
        1.0, gt=0, description="Seconds between reconciler passes while urgent messages wait."
    )
    delivery_report_wait: float = Field(
        3600.0,
        ge=0,
        description="Seconds a sent message waits for a delivery report before it ends sent.",
    )
    status_ttl: float = Field(
        172800.0,
        gt=0,
        description="Seconds a submitted message may wait for a final code before it ends expired.",
    )
    match_window: float = Field(
        300.0, gt=0, description="Seconds around submission in which gateway records are matched."
    )

    # --- results
    webhook_url: str | None = Field(None, description="URL that receives a POST per event.")
    webhook_secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 key of the webhook signature header."
    )
    webhook_timeout: float = Field(
        10.0, gt=0, description="Seconds before a webhook POST times out."
    )
    webhook_retries: int = Field(
        8, ge=0, description="Retries of a failed webhook POST, with backoff."
    )
    events_maxlen: int = Field(
        1_000_000, gt=0, description="Approximate length cap of the events stream."
    )
    record_ttl: int = Field(604800, gt=0, description="Seconds a final message record is kept.")

    # --- HTTP API (relay serve)
    api_host: str = Field("127.0.0.1", description="Address relay serve listens on.")
    api_port: int = Field(8080, ge=0, le=65535, description="Port relay serve listens on.")
    api_workers: int = Field(
        1, ge=1, le=64, description="Server processes of relay serve (one socket, shared)."
    )
    api_batch_max: int = Field(
        1000, ge=1, le=10000, description="Most messages in one POST /v1/messages/batch."
    )
    api_body_max: int = Field(
        8_388_608, ge=1024, description="Largest accepted request body, in bytes (else 413)."
    )
    api_redis_timeout: float = Field(
        2.0, gt=0, description="Seconds a request waits for Redis before answering 503."
    )
    api_retry_after: int = Field(
        5, ge=1, description="Retry-After seconds of a 503 answer while Redis is away."
    )
    api_sse_heartbeat: float = Field(
        15.0, gt=0, description="Seconds between comment heartbeats on GET /v1/events."
    )
    api_shutdown_timeout: float = Field(
        30.0, gt=0, description="Seconds relay serve waits for in-flight requests on SIGTERM."
    )

    # --- the SMSGateway24-compatible front (/getdata/)
    dropin_timezone: str = Field(
        "UTC",
        description="Time zone of drop-in dates without an offset (timetosend, getallsms).",
    )

    # --- processes
    process_dead_after: float = Field(
        10.0,
        gt=1,
        description="Seconds of silence after which a relay process counts as dead "
        "(heartbeats come every second).",
    )
    lane_stall_after: float = Field(
        60.0,
        gt=0,
        description="Seconds the oldest message of a lane may wait with no ticket run making "
        "progress on it before the sweep logs a WARNING and re-arms the lane.",
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_json: bool | None = Field(
        None, description="JSON logs; default: JSON unless stderr is a terminal."
    )
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Port of the Prometheus metrics endpoint."
    )

    @model_validator(mode="after")
    def _socket_timeout_covers_waits(self) -> Settings:
        if self.redis_socket_timeout <= self.redis_wait_timeout:
            raise ValueError(
                "RELAY_REDIS_SOCKET_TIMEOUT must exceed RELAY_REDIS_WAIT_TIMEOUT (a WAIT "
                "blocks that long)"
            )
        return self

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return level

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if is_sentinel_url(value):
            parse_sentinel_url(value)  # a ValueError names what is wrong
            return value
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss://, unix:// or redis+sentinel://")
        return value

    @field_validator("gateway_url", "webhook_url")
    @classmethod
    def _http_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        import phonenumbers

        region = value.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown region {value!r}; use an ISO code such as DE or US")
        return region

    @field_validator("dropin_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name such as Europe/Paris"
            ) from None
        return value

    @field_validator("pools", mode="before")
    @classmethod
    def _pools(cls, value: Any) -> Any:
        from relay.pools import check_pools

        return check_pools(value) if isinstance(value, dict) else value

    @field_validator("device_limits", mode="before")
    @classmethod
    def _limits(cls, value: Any) -> Any:
        from relay.pools import check_limits

        return check_limits(value) if isinstance(value, dict) else value

    @field_validator("key_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if any(ch in value for ch in " {}"):
            raise ValueError("must not contain spaces or braces")
        return value

    def send_interval_override(self, device_id: int, sim: int) -> float | None:
        """The overridden send interval of ``device_id``/``sim``, if settings give one."""
        for key in (f"{device_id}:{sim}", str(device_id)):
            if key in self.device_overrides:
                return float(self.device_overrides[key])
        return None


def settings_env(settings: Settings) -> dict[str, str]:
    """``settings`` as the ``RELAY_*`` environment variables that reproduce them (None left
    out), for child processes: workers, reconcilers, benchmarks and tests."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, dict | list):
            text = json.dumps(value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env[f"{ENV_PREFIX}{name.upper()}"] = text
    return env


def load_settings(**overrides: Any) -> Settings:
    """Read settings, turning a validation failure into one clear :class:`ConfigError`."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            if not err["loc"]:  # a check of several fields names them itself
                problems.append(str(err["msg"]))
                continue
            problems.append(f"{ENV_PREFIX}{str(err['loc'][0]).upper()}: {err['msg']}")
        raise ConfigError("; ".join(problems)) from None
