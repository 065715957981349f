"""The gateway endpoints: each takes parsed form fields and gives the answer's JSON.

Shapes, quirks and messages follow docs/gateway-api.md: refusals are
``{"error":1,"message":...}`` (HTTP 200, sent by the server layer), ``getalldevices``
has no ``error`` field, ``addalotofsms`` answers no ids.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from relay.multipart import Upload
from relay.simulator import forms
from relay.simulator.dates import date_object, parse_date, zone
from relay.simulator.devices import device_record
from relay.simulator.engine import AuthError, Engine
from relay.simulator.forms import ApiError
from relay.simulator.outcomes import STATUS_DESCRIPTIONS
from relay.simulator.query import SmsQuery, getallsms_answer

Answer = dict[str, Any]
SAVED = "Sms has been saved successfully"
IMAGE_TYPES = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif"}


@dataclass(frozen=True)
class Request:
    """One parsed gateway request; ``fault`` names a fault injected into it, if any."""

    endpoint: str
    fields: Mapping[str, str]
    files: Mapping[str, Upload]
    fault: str | None = None


class GatewayApi:
    """Answers the ``/getdata/<endpoint>`` calls against an :class:`Engine`."""

    def __init__(self, engine: Engine, tz: ZoneInfo, max_records: int | None) -> None:
        self.engine = engine
        self.tz = tz
        self.max_records = max_records
        self.requests: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self._count_lock = threading.Lock()
        self._routes: dict[str, Callable[[Request], Answer]] = {
            "gettoken": self.gettoken,
            "addsms": self.addsms,
            "smstosend": self.smstosend,
            "addalotofsms": self.addalotofsms,
            "getallsms": self.getallsms,
            "getsmsstatus": self.getsmsstatus,
            "getalldevices": self.getalldevices,
            "getdevicestatus": self.getdevicestatus,
            "savetag": self.savetag,
            "savecontact": self.savecontact,
            "savepaket": self.savepaket,
        }

    @property
    def endpoints(self) -> frozenset[str]:
        """Every endpoint name this API answers."""
        return frozenset(self._routes)

    def handle(self, request: Request) -> Answer:
        """The JSON answer of ``request`` (``KeyError`` for an unknown endpoint)."""
        route = self._routes[request.endpoint]
        try:
            answer = route(request)
        except (ApiError, AuthError) as exc:
            answer = {"error": 1, "message": str(exc)}
        with self._count_lock:
            self.requests[request.endpoint] += 1
            if answer.get("error") == 1:
                self.refusals[request.endpoint] += 1
        return answer

    # --- helpers -----------------------------------------------------------------------

    def _auth(self, request: Request) -> None:
        self.engine.account.check(request.fields.get("token", ""))

    def _slots(self) -> dict[int, tuple[int, ...]]:
        return {d.id: d.sims for d in self.engine.devices()}

    def _store_one(self, request: Request) -> Answer:
        fields, body = dict(request.fields), None
        upload = request.files.get("file")
        if upload is not None:
            body = _image_url(upload)
            fields["file"] = upload.filename
        item = forms.draft(fields, self._slots(), self.tz, body=body)
        (sms_id,) = self.engine.store([item], endpoint=request.endpoint, fault=request.fault)
        return {"error": 0, "sms_id": sms_id, "message": SAVED}

    # --- endpoints ---------------------------------------------------------------------

    def gettoken(self, request: Request) -> Answer:
        """``email`` + ``pass`` → the current token."""
        email = forms.text(request.fields, "email")
        password = forms.text(request.fields, "pass")
        token = self.engine.account.login(email, password)
        return {"error": 0, "message": "OK", "token": token}

    def addsms(self, request: Request) -> Answer:
        """Store one message; a multipart ``file`` replaces the body with the image's URL."""
        self._auth(request)
        return self._store_one(request)

    def smstosend(self, request: Request) -> Answer:
        """Like ``addsms``, authenticated by ``email`` + ``pass`` instead of a token."""
        email = forms.text(request.fields, "email")
        password = forms.text(request.fields, "pass")
        self.engine.account.login(email, password)
        return self._store_one(request)

    def addalotofsms(self, request: Request) -> Answer:
        """Store every ``smsdata`` item of ``datajson`` under consecutive ids, or none."""
        data = _datajson(request.fields)
        self.engine.account.check(str(data.get("token") or request.fields.get("token", "")))
        items = data.get("smsdata")
        if not isinstance(items, list) or not items:
            raise ApiError("Field 'smsdata' must be a non-empty list of messages")
        slots = self._slots()
        drafts = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise ApiError(f"smsdata[{index}]: must be an object")
            drafts.append(forms.draft(item, slots, self.tz, prefix=f"smsdata[{index}]: "))
        self.engine.store(drafts, endpoint=request.endpoint, fault=request.fault)
        return {"error": 0, "message": SAVED}

    def getallsms(self, request: Request) -> Answer:
        """The filtered records; ``count`` is the true total even when capped."""
        self._auth(request)
        query = _sms_query(request.fields, self.tz)
        with self.engine.lock:
            now = self.engine.now()
            messages = list(self.engine.messages.values())
            return getallsms_answer(query, messages, now, self.max_records)

    def getsmsstatus(self, request: Request) -> Answer:
        """The status of one message."""
        self._auth(request)
        sms_id = forms.required_int(request.fields, "sms_id")
        with self.engine.lock:
            message = self.engine.messages.get(sms_id)
            if message is None:
                raise ApiError(f"Sms {sms_id} not found")
            status = message.status_at(self.engine.now())
        description = STATUS_DESCRIPTIONS.get(status, "Unknown")
        return {
            "error": 0,
            "sms_id": sms_id,
            "status": status,
            "status_description": description,
            "message": "Ok",
        }

    def getalldevices(self, request: Request) -> Answer:
        """Every device with all documented fields (no ``error`` field, like the real one)."""
        self._auth(request)
        with self.engine.lock:
            now = self.engine.now()
            phones = [self.engine.phones[i] for i in sorted(self.engine.phones)]
            device = {str(p.device.id): device_record(p, now, self.tz) for p in phones}
        return {"count": len(device), "device": device or []}

    def getdevicestatus(self, request: Request) -> Answer:
        """online / lastseen / diffseconds of one device."""
        self._auth(request)
        device_id = forms.required_int(request.fields, "device_id")
        with self.engine.lock:
            phone = self.engine.phones.get(device_id)
            if phone is None:
                raise ApiError(f"Device {device_id} not found")
            now = self.engine.now()
            lastseen = phone.lastseen(now)
        return {
            "online": phone.device.online,
            "error": 0,
            "message": "OK",
            "device_id": device_id,
            "lastseen": date_object(lastseen, self.tz),
            "diffseconds": int(now - lastseen),
            "title": phone.device.title,
        }

    def savetag(self, request: Request) -> Answer:
        """Create a contact tag."""
        self._auth(request)
        title = forms.text(request.fields, "title")
        tag_id = self.engine.next_id("tag")
        with self.engine.lock:
            self.engine.tags[tag_id] = title
        return {"error": 0, "message": "Ok", "tag_id": tag_id}

    def savecontact(self, request: Request) -> Answer:
        """Create a contact in a tag (``tag_id`` or ``ctag_id``, both seen in the wild)."""
        self._auth(request)
        phone = forms.text(request.fields, "phone")
        fields = request.fields
        tag_id = forms.required_int(fields, "tag_id" if fields.get("tag_id") else "ctag_id")
        with self.engine.lock:
            if tag_id not in self.engine.tags:
                raise ApiError(f"Tag {tag_id} not found")
            contact_id = self.engine.next_id("contact")
            self.engine.contacts[contact_id] = {
                "phone": phone,
                "tag_id": tag_id,
                "fullname": fields.get("fullname", ""),
            }
        return {"error": 0, "contact_id": contact_id, "message": "ok"}

    def savepaket(self, request: Request) -> Answer:
        """Create a newsletter (stored only; the simulated phones do not send newsletters)."""
        self._auth(request)
        fields = request.fields
        paket: dict[str, Any] = {n: forms.text(fields, n) for n in ("title", "body", "tags")}
        device_id = paket["device_id"] = forms.required_int(fields, "device_id")
        paket["sim"] = forms.required_int(fields, "sim")
        paket["time_to_send"] = fields.get("time_to_send", "0")
        with self.engine.lock:
            if device_id not in self.engine.phones:
                raise ApiError(f"Device {device_id} not found")
            paket_id = self.engine.next_id("paket")
            self.engine.pakets[paket_id] = paket
        return {"error": 0, "message": "Ok", "paket_id": paket_id}


def _image_url(upload: Upload) -> str:
    """The fake public URL that replaces the body of a message with an image."""
    ext = IMAGE_TYPES.get(upload.content_type.lower())
    if ext is None and "." in upload.filename:
        ext = upload.filename.rsplit(".", 1)[1].lower()
    if ext not in IMAGE_TYPES.values() and ext != "jpeg":
        raise ApiError("Field 'file' must be an image (jpeg, png, webp, gif)")
    digest = hashlib.sha1(upload.data).hexdigest()[:20]
    return f"https://files.smsgateway24.invalid/uploads/{digest}.{ext}"


def _datajson(fields: Mapping[str, str]) -> dict[str, Any]:
    raw = forms.text(fields, "datajson")
    try:
        data = json.loads(raw)
    except ValueError:
        raise ApiError("Field 'datajson' is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError("Field 'datajson' must be a JSON object with token and smsdata")
    return data


def _sms_query(fields: Mapping[str, str], default_tz: ZoneInfo) -> SmsQuery:
    """Parse the ``getallsms`` filters; dates are read in ``timezone`` when given."""
    tz = default_tz
    if fields.get("timezone", "").strip():
        try:
            tz = zone(fields["timezone"].strip())
        except ValueError:
            raise ApiError(f"Field 'timezone': unknown time zone {fields['timezone']!r}") from None
    dates: dict[str, float | None] = {}
    for name, end in (("begindate", False), ("enddate", True)):
        value = fields.get(name, "").strip()
        try:
            dates[name] = parse_date(value, tz, end_of_day=end) if value else None
        except ValueError:
            raise ApiError(f"Field '{name}' must be YYYY-MM-DD or YYYY-MM-DD HH:MM:SS") from None
    phone = fields.get("phone", "").strip()
    return SmsQuery(
        tz=tz,
        device_id=forms.integer(fields, "device_id"),
        sim=forms.integer(fields, "sim"),
        status=forms.integer(fields, "status"),
        customerid=forms.integer(fields, "customerid"),
        phone=phone or None,
        begin=dates["begindate"],
        end=dates["enddate"],
        desc=bool(forms.flag(fields, "orderbydesc")),
        onlycount=bool(forms.flag(fields, "onlycount")),
    )
