"""The drop-in's answers in the gateway's shapes (docs/gateway-api.md).

Every answer is a JSON object sent with HTTP 200; a refusal is ``{"error": 1, "message":
...}``, which is how the gateway's clients recognise one (the PHP SDK throws on
``error == 1`` and on any HTTP 4xx/5xx). Ids are integers, dates are PHP date objects.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from relay.clock import to_ms
from relay.dropin.dates import date_object, human
from relay.dropin.statuses import gateway_status
from relay.ids import id_time_ms
from relay.store import Message

Answer = dict[str, Any]
SAVED = "Sms has been saved successfully"


def refused(message: str) -> Answer:
    """A refusal, as the gateway writes one."""
    return {"error": 1, "message": message}


def saved(sms_id: int | None = None) -> Answer:
    """The answer of a stored send request (``addalotofsms`` answers no id)."""
    if sms_id is None:
        return {"error": 0, "message": SAVED}
    return {"error": 0, "sms_id": sms_id, "message": SAVED}


def sms_status(number: int, msg: Message) -> Answer:
    """The ``getsmsstatus`` answer for drop-in id ``number``."""
    code, words = gateway_status(msg)
    return {
        "error": 0,
        "sms_id": number,
        "status": code,
        "status_description": words,
        "message": "Ok",
    }


def sms_record(number: int, msg: Message, tz: ZoneInfo) -> Answer:
    """One record of ``getallsms.smss``; ``created`` is when relay stored the message,
    ``senttime`` when relay learned the phone sent it."""
    code, words = gateway_status(msg)
    sent = msg.times.get("sent")
    return {
        "id": number,
        "sendto": msg.sendto,
        "body": msg.body,
        "customerid": msg.customerid,
        "status": code,
        "statustitle": words,
        "deviceid": msg.device_id,
        "urgent": 1 if msg.urgent else 0,
        "created": date_object(id_time_ms(msg.id), tz),
        "senttime": date_object(to_ms(sent.timestamp()), tz) if sent else None,
        "timetosend": date_object(to_ms(msg.timetosend.timestamp()), tz)
        if msg.timetosend
        else None,
        "sim": msg.sim,
        "paketid": None,
        "pakettitle": None,
        "paketbody": None,
    }


# --- devices (from the JSON relay stores at each getalldevices sync: relay/devices.py) ---


def device_record(stored: dict[str, Any], tz: ZoneInfo) -> Answer:
    """A device of ``getalldevices`` rebuilt from its stored JSON."""
    created, lastseen = _ms(stored.get("created")), _ms(stored.get("lastseen"))
    return {
        "id": int(stored["id"]),
        "title": stored.get("title"),
        "number": stored.get("number"),
        "imei": stored.get("imei"),
        "created": date_object(created, tz),
        "createdhumanformat": human(created, tz) if created is not None else None,
        "lastseen": date_object(lastseen, tz),
        "lastseenhumanformat": human(lastseen, tz) if lastseen is not None else None,
        "serialnumber": stored.get("serialnumber"),
        "siminfo": [_sim(s) for s in stored.get("siminfo") or [] if isinstance(s, dict)],
        "appversion": stored.get("appversion"),
        "isappversionactual": stored.get("isappversionactual"),
        "delaybetweeneachsms": _seconds(stored.get("delaybetweeneachsms")),
        "delaybetweenrequest": _seconds(stored.get("delaybetweenrequest")),
        "subscription": stored.get("subscription"),
    }


def device_status(stored: dict[str, Any], now_ms: int, tz: ZoneInfo) -> Answer:
    """The ``getdevicestatus`` answer; ``lastseen`` is always a date object (the epoch when
    the phone was never seen) and ``title`` always text, as the PHP SDK requires."""
    lastseen = _ms(stored.get("lastseen")) or 0
    return {
        "online": bool(stored.get("online")),
        "error": 0,
        "message": "OK",
        "device_id": int(stored["id"]),
        "lastseen": date_object(lastseen, tz),
        "diffseconds": max(0, (now_ms - lastseen) // 1000),
        "title": stored.get("title") or "",
    }


def _ms(value: Any) -> int | None:
    """Epoch ms of a stored ISO 8601 time (None when absent or unreadable)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return to_ms(moment.timestamp())


def _seconds(value: Any) -> Any:
    """Whole seconds as an int (``1``, as the gateway writes them), fractions as they are."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _sim(stored: dict[str, Any]) -> dict[str, Any]:
    """A ``siminfo`` entry with the gateway's capitalised keys and string values."""
    roaming = stored.get("roaming")
    return {
        "Slot": str(stored.get("slot", "")),
        "IccId": stored.get("iccid"),
        "Number": stored.get("number"),
        "Roaming": "1" if roaming else "0",
        "CountryIso": stored.get("country_iso"),
        "CarrierName": stored.get("carrier_name"),
    }


def encode(answer: Answer) -> bytes:
    """``answer`` as compact UTF-8 JSON (non-ASCII kept as is, as PHP's flag-less
    ``json_encode`` would escape it; both decode the same)."""
    return json.dumps(answer, separators=(",", ":"), ensure_ascii=False).encode()
