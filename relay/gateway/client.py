"""``GatewayClient``: one method per SMSGateway24 endpoint, over one pooled HTTP client.

Every request is a POST form (multipart when an image is attached): the token and the
password travel in bodies, never in URLs, and are registered with :mod:`relay.log` so no
log line can show them. Request bodies are never logged; each HTTP exchange logs one
``gateway.request`` debug line (endpoint, attempt, HTTP status, duration, outcome).

Two kinds of call, two failure policies:

- **read-only** (``gettoken``, ``getallsms``, ``getsmsstatus``, ``getalldevices``,
  ``getdevicestatus``): transport errors, HTTP 5xx and unreadable answers are retried
  ``retries`` times with capped, jittered exponential backoff, then raised as
  :class:`~relay.errors.GatewayUnavailable` (or its subclasses).
- **submitting** (``addsms``, ``smstosend``, ``addalotofsms``, ``savetag``,
  ``savecontact``, ``savepaket``): never retried here. A failure raises
  :class:`~relay.errors.NotSent` when the request provably never left, else
  :class:`~relay.errors.OutcomeUnknown` (see :func:`relay.gateway.wire.submit_failure`).

In both, an ``"error":1`` answer is definite: :class:`~relay.errors.GatewayAuthError` or
:class:`~relay.errors.GatewayRejected`. On an auth error of a token call, when email and
password are known, the client fetches a new token once and repeats the call once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, TypeVar

import httpx

from relay.clock import Clock
from relay.closing import Closing
from relay.errors import (
    ConfigError,
    GatewayAuthError,
    GatewayUnavailable,
    NotSent,
)
from relay.gateway.dates import format_paket_time
from relay.gateway.forms import (
    Form,
    Upload,
    accepted,
    id_field,
    load_upload,
    message_fields,
    model_parser,
    sms_query,
    token_field,
)
from relay.gateway.models import (
    Device,
    DeviceList,
    DeviceStatus,
    OutgoingSms,
    SmsList,
    SmsStatus,
)
from relay.gateway.wire import Backoff, Files, Wire
from relay.log import get_logger, register_secret
from relay.settings import Settings

T = TypeVar("T")
Parser = Callable[[Any], T]

log = get_logger(__name__)


class GatewayClient(Closing):
    """A synchronous SMSGateway24 client; thread-safe, keeps connections alive between calls.

    ``base_url`` is the API base (``https://smsgateway24.com/getdata/``); each endpoint URL
    is the base plus the endpoint name. Give ``token``, or ``email`` and ``password`` (the
    token is then fetched on first need and cached), or both (the token is renewed from the
    login when the gateway stops accepting it). ``transport`` replaces httpx's network
    transport (tests, proxies). ``clock`` is only used to sleep between retries.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        email: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        retries: int = 4,
        backoff_base: float = 0.2,
        backoff_max: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        clock: Clock | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.base_url = _normalise_base(base_url)
        self._token = token or None
        self._email = email or None
        self._password = password or None
        register_secret(token)
        register_secret(password)
        self._token_lock = threading.RLock()
        self._wire = Wire(
            self.base_url,
            timeout=timeout,
            retries=retries,
            backoff=Backoff(backoff_base, backoff_max),
            transport=transport,
            clock=clock,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayClient:
        """A client configured by the ``RELAY_GATEWAY_*`` settings."""
        token, password = settings.gateway_token, settings.gateway_password
        return cls(
            settings.gateway_url,
            token=token.get_secret_value() if token else None,
            email=settings.gateway_email,
            password=password.get_secret_value() if password else None,
            timeout=settings.gateway_timeout,
            retries=settings.gateway_retries,
        )

    # --- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Close the pooled connections; the client cannot be used afterwards."""
        self._wire.close()

    def __repr__(self) -> str:
        return f"GatewayClient({self.base_url!r})"

    # --- endpoints: token -------------------------------------------------------------

    def get_token(self, email: str | None = None, password: str | None = None) -> str:
        """``gettoken``: a fresh token for ``email``/``password`` (default: the client's own).

        A token obtained with the client's own login becomes the client's token.
        Raises :class:`GatewayAuthError` when the gateway refuses the login.
        """
        own = email is None and password is None
        email, password = email or self._email, password or self._password
        if not email or not password:
            raise ConfigError(
                "RELAY_GATEWAY_EMAIL, RELAY_GATEWAY_PASSWORD: needed to obtain a token"
            )
        register_secret(password)
        form = {"email": email, "pass": password}
        if not own:
            return self._wire.read("gettoken", form, token_field, login=True)
        with self._token_lock:  # one fetch at a time; other threads then reuse its token
            self._token = self._wire.read("gettoken", form, token_field, login=True)
            return self._token

    # --- endpoints: sending -----------------------------------------------------------

    def add_sms(
        self,
        sendto: str,
        body: str,
        device_id: int,
        sim: int,
        *,
        timetosend: datetime | date | str | None = None,
        customerid: int | None = None,
        urgent: bool = False,
        file: Upload | None = None,
    ) -> int:
        """``addsms``: store one message; returns its ``sms_id``.

        ``file`` attaches an image (a path, or ``(filename, bytes, content_type)``) and makes
        the request multipart; ``body`` may then be empty (the gateway replaces it with the
        image URL). Never retried: raises :class:`NotSent` or :class:`OutcomeUnknown`.
        """
        fields = message_fields(sendto, body, device_id, sim, timetosend, customerid, urgent)
        files = load_upload(file, body)
        return self._submit(
            "addsms", lambda token: {"token": token, **fields}, id_field("sms_id"), files
        )

    def send_with_login(
        self,
        sendto: str,
        body: str,
        device_id: int,
        sim: int,
        *,
        email: str | None = None,
        password: str | None = None,
        timetosend: datetime | date | str | None = None,
        customerid: int | None = None,
        urgent: bool = False,
    ) -> int:
        """``smstosend``: like :meth:`add_sms` but authenticated by email and password.

        Uses the client's login unless ``email``/``password`` are given; returns ``sms_id``.
        """
        email, password = email or self._email, password or self._password
        if not email or not password:
            raise ConfigError("RELAY_GATEWAY_EMAIL, RELAY_GATEWAY_PASSWORD: needed by smstosend")
        register_secret(password)
        fields = message_fields(sendto, body, device_id, sim, timetosend, customerid, urgent)
        form = {"email": email, "pass": password, **fields}
        return self._wire.submit("smstosend", form, id_field("sms_id"))

    def add_many(self, messages: Sequence[OutgoingSms | Mapping[str, Any]]) -> None:
        """``addalotofsms``: store a batch in one request. The gateway returns no ids.

        ``messages`` are :class:`OutgoingSms` or mappings with the gateway's field names
        (:meth:`OutgoingSms.of`; anything else is a :class:`TypeError`, nothing sent). The one
        form field ``datajson`` holds compact JSON ``{"token":…, "smsdata":[…]}``. An empty
        batch sends nothing. Never retried: raises :class:`NotSent` or
        :class:`OutcomeUnknown` (then verify with :meth:`get_all_sms` before resending).
        """
        if not messages:
            return
        items = [OutgoingSms.of(message).to_datajson_item() for message in messages]

        def form(token: str) -> Form:
            data = {"token": token, "smsdata": items}
            return {"datajson": json.dumps(data, separators=(",", ":"), ensure_ascii=False)}

        self._submit("addalotofsms", form, accepted)

    # --- endpoints: reading -----------------------------------------------------------

    def get_all_sms(
        self,
        *,
        device_id: int | None = None,
        status: int | None = None,
        begindate: datetime | date | str | None = None,
        enddate: datetime | date | str | None = None,
        sim: int | None = None,
        customerid: int | None = None,
        onlycount: bool = False,
        phone: str | None = None,
        orderbydesc: bool = False,
        timezone: str | None = None,
    ) -> SmsList:
        """``getallsms``: the messages matching every given filter.

        Aware datetimes are converted into ``timezone`` (an IANA name), or into UTC when none
        is given, and the zone used is then sent as ``timezone``. Naive datetimes are sent as
        they are, dates as ``YYYY-MM-DD``. The answer may hold fewer records than its count:
        see :attr:`SmsList.more_available`.
        """
        fields = sms_query(
            device_id=device_id,
            status=status,
            begindate=begindate,
            enddate=enddate,
            sim=sim,
            customerid=customerid,
            onlycount=onlycount,
            phone=phone,
            orderbydesc=orderbydesc,
            timezone=timezone,
        )
        return self._read("getallsms", fields, model_parser(SmsList))

    def get_sms_status(self, sms_id: int) -> SmsStatus:
        """``getsmsstatus``: the current status code of one message."""
        return self._read("getsmsstatus", {"sms_id": str(sms_id)}, model_parser(SmsStatus))

    def get_all_devices(self) -> list[Device]:
        """``getalldevices``: every phone of the account, with its SIMs and delays."""
        return self._read("getalldevices", {}, model_parser(DeviceList)).devices

    def get_device_status(self, device_id: int) -> DeviceStatus:
        """``getdevicestatus``: whether a phone is online and when it last polled."""
        fields = {"device_id": str(device_id)}
        return self._read("getdevicestatus", fields, model_parser(DeviceStatus))

    # --- endpoints: contacts and newsletters --------------------------------------------

    def save_tag(self, title: str) -> int:
        """``savetag``: create a contact tag; returns its ``tag_id``. Never retried."""
        return self._submit(
            "savetag", lambda token: {"token": token, "title": title}, id_field("tag_id")
        )

    def save_contact(self, phone: str, tag_id: int, fullname: str | None = None) -> int:
        """``savecontact``: add a contact under a tag; returns its ``contact_id``.

        The tag goes as both ``tag_id`` and ``ctag_id`` (docs/gateway-api.md: the
        examples and the parameter tables disagree).
        """
        fields = {"phone": phone, "tag_id": str(tag_id), "ctag_id": str(tag_id)}
        if fullname is not None:
            fields["fullname"] = fullname
        return self._submit(
            "savecontact", lambda token: {"token": token, **fields}, id_field("contact_id")
        )

    def save_paket(
        self,
        title: str,
        device_id: int,
        body: str,
        tags: Sequence[int] | str,
        sim: int,
        time_to_send: datetime | str,
    ) -> int:
        """``savepaket``: create a newsletter to the contacts of ``tags``; returns ``paket_id``.

        ``time_to_send`` is sent as ``DD.MM.YYYY HH:MM:SS``; the phone's user still has to
        start the newsletter on the device.
        """
        fields = {
            "title": title,
            "device_id": str(device_id),
            "body": body,
            "tags": tags if isinstance(tags, str) else ",".join(str(tag) for tag in tags),
            "sim": str(sim),
            "time_to_send": format_paket_time(time_to_send),
        }
        return self._submit(
            "savepaket", lambda token: {"token": token, **fields}, id_field("paket_id")
        )

    # --- token handling ---------------------------------------------------------------

    def _can_login(self) -> bool:
        return bool(self._email and self._password)

    def _current_token(self, *, submitting: bool) -> str:
        """The cached token, fetched with the login first when there is none.

        For a submitting call a token fetch that fails for lack of the gateway means the
        submission itself never left: that is :class:`NotSent`.
        """
        with self._token_lock:
            if self._token is not None:
                return self._token
            if not self._can_login():
                raise ConfigError(
                    "RELAY_GATEWAY_TOKEN or RELAY_GATEWAY_EMAIL + RELAY_GATEWAY_PASSWORD: "
                    "the gateway needs a token"
                )
            try:
                return self.get_token()
            except GatewayUnavailable as exc:
                if submitting:
                    raise NotSent(f"could not obtain a gateway token: {exc}") from exc
                raise

    def _drop_token(self, token: str) -> None:
        """Forget ``token`` unless another thread already replaced it."""
        with self._token_lock:
            if self._token == token:
                self._token = None

    def _with_token(self, call: Callable[[str], T], *, submitting: bool) -> T:
        """Run ``call(token)``; on an auth error, renew the token from the login and rerun once.

        An auth error is a definite refusal (nothing was stored), so this is safe for
        submitting calls too.
        """
        token = self._current_token(submitting=submitting)
        try:
            return call(token)
        except GatewayAuthError:
            if not self._can_login():
                raise
            log.info("gateway.token_renew")
            self._drop_token(token)
            return call(self._current_token(submitting=submitting))

    # --- exchanges --------------------------------------------------------------------

    def _read(self, endpoint: str, fields: Mapping[str, str], parse: Parser[T]) -> T:
        """A read-only token call, retried (see the module docstring)."""
        return self._with_token(
            lambda token: self._wire.read(endpoint, {"token": token, **fields}, parse),
            submitting=False,
        )

    def _submit(
        self,
        endpoint: str,
        form: Callable[[str], Form],
        parse: Parser[T],
        files: Files | None = None,
    ) -> T:
        """A submitting token call, sent once (see the module docstring)."""
        return self._with_token(
            lambda token: self._wire.submit(endpoint, form(token), parse, files),
            submitting=True,
        )


def _normalise_base(base_url: str) -> str:
    """``base_url`` with exactly one trailing slash; an http(s) URL or :class:`ConfigError`."""
    base = base_url.strip()
    if not base.startswith(("http://", "https://")):
        raise ConfigError(f"RELAY_GATEWAY_URL: must start with http:// or https://: {base!r}")
    return base.rstrip("/") + "/"
